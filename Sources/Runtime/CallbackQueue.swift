/// Where a port delivers its answers: a serial queue of work on one thread. The event loop is
/// one (`NetCore.EventLoop`): the gateway passes its connection's loop, so an answer lands where
/// the connection lives, without the port knowing sockets or loops.
public protocol CallbackQueue: AnyObject, Sendable {
    /// Runs `work` on the queue's thread, after what is queued already.
    func execute(_ work: @escaping @Sendable () -> Void)
    /// Whether the caller runs on the queue's thread now.
    var inEventLoop: Bool { get }
}

/// A timer that can be called off.
public protocol Cancellable: AnyObject {
    func cancel()
}

/// Time for the flows' decisions (hedging, deadlines): now, and work after a delay, on one serial
/// queue. The event loop is one; `ManualClock` in TestSupport is another, so decision tests run
/// without real sleeps.
public protocol LoopClock: CallbackQueue {
    /// Monotonic nanoseconds.
    var nowNanos: UInt64 { get }
    /// Runs `body` on the queue after `nanos`.
    func after(_ nanos: UInt64, _ body: @escaping () -> Void) -> Cancellable
}
