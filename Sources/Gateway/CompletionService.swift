import Domain
import FleetCore
import NetCore

/// A completion a subscriber listens to: what a transport keeps to let go of it when its client leaves.
public protocol CompletionStream: AnyObject, Sendable {
    /// Call on the subscriber's loop. A stream nobody listens to any more is cancelled.
    func detach(_ subscriber: CompletionSubscriber)
}

public enum CancelOutcome: Sendable { case cancelled, alreadyFinished, notFound }

/// Where completions run, as the transports see it: `FleetCompletions`, over the fleet's ports in
/// Redis or in this process's memory. The transports know nothing else.
public protocol CompletionService: AnyObject, Sendable {
    /// Starts, queues or (for a known client-supplied request_id) attaches to a completion. The
    /// subscriber receives the events on its loop. Call on the subscriber's loop.
    func submit(_ request: CompletionRequest, subscriber: CompletionSubscriber) -> Result<CompletionStream, APIError>
    /// Cancels one of `owner`'s completions by request_id, wherever it runs (`done` on any thread).
    func cancel(requestID: String, owner: String, done: @escaping @Sendable (CancelOutcome) -> Void)
    /// Cancels every completion made with API key `keyID` (revoked) that this node relays; returns how many.
    @discardableResult func cancelAll(keyID: Int64) -> Int
    /// Stops taking new completions (SIGTERM); running ones go on.
    func beginDraining()
    var isDraining: Bool { get }
    /// Completions this node still serves (running or waiting).
    var inFlight: Int { get }
}
