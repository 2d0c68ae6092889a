import Domain

/// What a gateway knows of one completion's progress, as a pure state machine: every input
/// comes with `now` (monotonic nanoseconds), every decision goes out as a value. `FleetStream` is
/// its shell: it holds the subscribers, the text and the lanes, and carries the decisions out.
///
/// enqueueing: not on a queue yet (subscribers get `accepted` only once it is, so a refusal is an
/// ordinary error answer); waiting: for a worker; running: a worker (or the gateway it follows)
/// sends its events; finished.
public struct StreamState: Sendable, Equatable {
    public enum Phase: Sendable, Equatable { case enqueueing, waiting, running, finished }

    public struct Limits: Sendable, Equatable {
        /// No worker took it in this long: server_busy.
        public var queueWaitNanos: UInt64
        /// A running stream whose worker said nothing this long is interrupted.
        public var silenceNanos: UInt64
        /// The lease is renewed this often (0: it holds none).
        public var renewEveryNanos: UInt64
        public init(queueWaitNanos: UInt64, silenceNanos: UInt64, renewEveryNanos: UInt64) {
            self.queueWaitNanos = queueWaitNanos
            self.silenceNanos = silenceNanos
            self.renewEveryNanos = renewEveryNanos
        }
    }

    /// What a deadline check decided (the lease renewal comes with any of the others).
    public enum Decision: Sendable, Equatable {
        case renewLease
        /// No worker took it in time.
        case queueWaitExpired
        /// The worker went silent: interrupted (and told to stop).
        case workerSilent
        /// Its lane cannot be reached while it waits: move it to the next lane.
        case fallBack
    }

    /// What a delta does to the text.
    public enum DeltaVerdict: Sendable, Equatable {
        case append
        /// Already had it (a replay after a follow).
        case duplicate
        /// A message was lost: the text would have a hole.
        case gap
        /// The stream ended already.
        case ignored
    }

    public let created: UInt64
    public let limits: Limits
    public private(set) var phase = Phase.enqueueing
    public private(set) var started: UInt64?
    public private(set) var firstToken: UInt64?
    public private(set) var lastHeard: UInt64 = 0
    public private(set) var lastRenewed: UInt64
    /// Tokens received (the next delta's index).
    public private(set) var tokens = 0

    public init(created: UInt64, limits: Limits) {
        self.created = created
        self.limits = limits
        lastRenewed = created
    }

    public var isFinished: Bool { phase == .finished }
    /// Waiting for a worker (or not even queued yet).
    public var isQueued: Bool { phase == .enqueueing || phase == .waiting }

    /// On a queue: true the first time (its subscribers learn it was accepted now).
    public mutating func enqueued() -> Bool {
        guard phase == .enqueueing else { return false }
        phase = .waiting
        return true
    }

    /// Another gateway holds it and forwards its events: that gateway's silence counts like a
    /// worker's. true if it left the queue now.
    public mutating func following(now: UInt64) -> Bool {
        _ = enqueued()
        guard phase == .waiting else { return false }
        phase = .running
        lastHeard = now
        return true
    }

    /// Anything from its worker (an event, a keepalive): alive. true if it left the queue now.
    public mutating func heard(now: UInt64) -> Bool {
        lastHeard = now
        guard phase == .waiting else { return false }
        phase = .running
        return true
    }

    /// The worker said it started. true the first time (the queue time ends here).
    public mutating func workerStarted(now: UInt64) -> Bool {
        guard phase != .finished, started == nil else { return false }
        started = now
        return true
    }

    public mutating func delta(index: Int, now: UInt64) -> DeltaVerdict {
        guard phase != .finished else { return .ignored }
        if index < tokens { return .duplicate }
        guard index == tokens else { return .gap }
        if firstToken == nil { firstToken = now }
        tokens += 1
        return .append
    }

    /// Ends it (whatever way); false if it had ended.
    public mutating func finish() -> Bool {
        guard phase != .finished else { return false }
        phase = .finished
        return true
    }

    /// The deadlines at `now`. `watchesSilence`: its worker runs in another process (silence
    /// means it died); `canFallBack`: its lane is down and another lane exists.
    public mutating func check(now: UInt64, watchesSilence: Bool, canFallBack: Bool) -> [Decision] {
        guard phase != .finished else { return [] }
        var out: [Decision] = []
        if limits.renewEveryNanos > 0, now > lastRenewed, now - lastRenewed >= limits.renewEveryNanos {
            lastRenewed = now
            out.append(.renewLease)
        }
        let waited = now > created ? now - created : 0
        switch phase {
        case .enqueueing where waited > limits.queueWaitNanos, .waiting where waited > limits.queueWaitNanos:
            out.append(.queueWaitExpired)
        case .running where watchesSilence && now > lastHeard && now - lastHeard > limits.silenceNanos:
            out.append(.workerSilent)
        case .waiting where canFallBack:
            out.append(.fallBack)
        default:
            break
        }
        return out
    }

    /// The client's timings, ending at `end`.
    public func timings(end: UInt64, upstream: String) -> Timings {
        Timings(created: created, started: started, firstToken: firstToken, end: end, upstream: upstream)
    }
}
