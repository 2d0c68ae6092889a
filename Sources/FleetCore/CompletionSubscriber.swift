import Domain
import NetCore

/// Receives a completion's events, on its own loop.
public protocol CompletionSubscriber: AnyObject {
    var loop: EventLoop { get }
    func receive(_ event: CompletionEvent)
    /// Ends the transport abruptly (an injected mid-stream failure): no end marker is written.
    func abortTransport()
    /// Holds more unsent output than it wants (see `GenerationSink.isBacklogged`).
    var isBacklogged: Bool { get }
}

extension CompletionSubscriber {
    public func abortTransport() {}
    public var isBacklogged: Bool { false }
}
