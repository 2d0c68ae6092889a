/// Where a port delivers its answers: a serial queue of work on one thread. The event loop is
/// one (`NetCore.EventLoop`): the gateway passes its connection's loop, so an answer lands where
/// the connection lives, without the port knowing sockets or loops.
public protocol CallbackQueue: AnyObject, Sendable {
    /// Runs `work` on the queue's thread, after what is queued already.
    func execute(_ work: @escaping @Sendable () -> Void)
    /// Whether the caller runs on the queue's thread now.
    var inEventLoop: Bool { get }
}
