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
        let here = local.cancel(requestID: requestID, owner: owner)
        if here == .notFound { fleet.cancel(requestID: requestID, owner: owner, done: done) } else { done(here) }
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
