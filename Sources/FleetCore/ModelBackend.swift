import Domain
import NetCore

// The model port of the completion engine: what a worker drives, whatever is behind it (the
// built-in model, upstream model servers through the proxy).

/// Receives one generation's output, on the loop it was started on.
public protocol GenerationSink: AnyObject {
    func token(_ text: String)
    /// An upstream's stream chunk, forwarded as it came (`CompletionEvent.delta`'s `chunk`);
    /// `text` is what its first choice added to the answer.
    func chunk(_ text: String, _ chunk: String)
    func finished(_ reason: FinishReason, usage: Usage, upstream: String)
    /// `dropTransport`: the model's connection broke without an end marker; the clients'
    /// transports are dropped the same way (no end marker either).
    func failed(_ error: APIError, dropTransport: Bool)
    /// The receiver holds more unsent output than it wants: a backend that can wait (the
    /// built-in model at zero pace) makes no more tokens until it is false again.
    var isBacklogged: Bool { get }
}

extension GenerationSink {
    public var isBacklogged: Bool { false }
    public func chunk(_ text: String, _ chunk: String) { token(text) }
}

/// A generation in progress.
public protocol RunningGeneration: AnyObject {
    /// Stops it now (no more calls to the sink); returns the usage so far.
    func cancel() -> Usage
}

/// Where tokens come from (push-based): start a generation on a loop and it calls the sink as
/// tokens arrive, then exactly once `finished` or `failed` — unless cancelled. The built-in model is
/// one backend; upstream model servers will be others.
public protocol ModelBackend: Sendable {
    func start(_ request: CompletionRequest, seed: UInt64, on loop: EventLoop, sink: GenerationSink) -> RunningGeneration
}
