import Domain

/// `serve` with Redis: completions go through the fleet while it can be reached, and run in this
/// process while it cannot (the README's Redis-down policy for serve nodes). Cancels find a
/// completion on either path.
public final class FailoverCompletions: CompletionService, @unchecked Sendable {
    let fleet: FleetCompletions
    let local: CompletionScheduler
    let fleetUp: @Sendable () -> Bool

    public init(fleet: FleetCompletions, local: CompletionScheduler, fleetUp: @escaping @Sendable () -> Bool) {
        self.fleet = fleet
        self.local = local
        self.fleetUp = fleetUp
    }

    public func submit(_ request: CompletionRequest, subscriber: CompletionSubscriber) -> Result<CompletionStream, APIError> {
        fleetUp() ? fleet.submit(request, subscriber: subscriber) : local.submit(request, subscriber: subscriber)
    }

    public func cancel(requestID: String, owner: String, done: @escaping @Sendable (CancelOutcome) -> Void) {
        // The fleet's stream first: it answers once the client's stream has ended (the local
        // runner may hold the same request as this node's worker, whose end reaches the client later).
        let local = self.local
        fleet.cancel(requestID: requestID, owner: owner) { outcome in
            done(outcome == .notFound ? local.cancel(requestID: requestID, owner: owner) : outcome)
        }
    }

    @discardableResult
    public func cancelAll(keyID: Int64) -> Int { fleet.cancelAll(keyID: keyID) + local.cancelAll(keyID: keyID) }

    public func beginDraining() {
        fleet.beginDraining()
        local.beginDraining()
    }

    public var isDraining: Bool { fleet.isDraining }
    public var inFlight: Int { fleet.inFlight + local.inFlight }
}
