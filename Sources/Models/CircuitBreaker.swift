/// When an upstream stops being tried and how it comes back. Times are in nanoseconds on a clock
/// the caller passes in (monotonic in the product, a counter in tests).
public struct BreakerPolicy: Sendable {
    /// This many failures in a row open the breaker…
    public var consecutiveFailures = 3
    /// …or this share of failures among at least `minimumRequests` in the last `windowNanos`.
    public var failureRatio = 0.5
    public var minimumRequests = 10
    public var windowNanos: UInt64 = 10_000_000_000
    /// How long it stays open the first time; doubled each time a probe fails, up to `maxOpenNanos`.
    public var openNanos: UInt64 = 1_000_000_000
    public var maxOpenNanos: UInt64 = 30_000_000_000
    /// Probes that must succeed (one at a time) to close it again.
    public var probesToClose = 2
    public init() {}
}

/// A circuit breaker as a pure state machine: closed → open (after failures) → half-open (after
/// the open time: one probe at a time) → closed (after enough probes succeed) or open again.
public struct CircuitBreaker: Sendable {
    public enum State: Sendable, Equatable {
        case closed
        case open(until: UInt64)
        case halfOpen(probing: Bool, successes: Int)

        public var name: String {
            switch self {
            case .closed: return "closed"
            case .open: return "open"
            case .halfOpen: return "half_open"
            }
        }
    }

    /// What a request may do.
    public enum Permit: Sendable, Equatable {
        case normal
        /// The one request that tests a half-open upstream: its outcome decides.
        case probe
    }

    public let policy: BreakerPolicy
    public private(set) var state = State.closed
    private var consecutive = 0
    private var openFor: UInt64
    /// Outcomes in the window: (time, failed).
    private var recent: [(UInt64, Bool)] = []
    public private(set) var timesOpened = 0

    public init(policy: BreakerPolicy = BreakerPolicy()) {
        self.policy = policy
        openFor = policy.openNanos
    }

    /// Whether a request may go now (and as what). Moves open → half-open when its time is up.
    public mutating func permit(now: UInt64) -> Permit? {
        switch state {
        case .closed: return .normal
        case .open(let until):
            guard now >= until else { return nil }
            state = .halfOpen(probing: true, successes: 0)
            return .probe
        case .halfOpen(let probing, let successes):
            if probing { return nil }
            state = .halfOpen(probing: true, successes: successes)
            return .probe
        }
    }

    /// Whether `permit` would let a request through now (no state change).
    public func wouldPermit(now: UInt64) -> Bool {
        switch state {
        case .closed: return true
        case .open(let until): return now >= until
        case .halfOpen(let probing, _): return !probing
        }
    }

    public mutating func recordSuccess(now: UInt64, permit: Permit) {
        note(now, failed: false)
        consecutive = 0
        guard permit == .probe, case .halfOpen(_, let successes) = state else { return }
        if successes + 1 >= policy.probesToClose {
            state = .closed
            openFor = policy.openNanos
            recent.removeAll()
        } else {
            state = .halfOpen(probing: false, successes: successes + 1)
        }
    }

    public mutating func recordFailure(now: UInt64, permit: Permit) {
        note(now, failed: true)
        consecutive += 1
        switch state {
        case .halfOpen:
            // The probe failed: open again, for longer.
            openFor = min(openFor * 2, policy.maxOpenNanos)
            open(now)
        case .closed:
            let failures = recent.reduce(0) { $0 + ($1.1 ? 1 : 0) }
            if consecutive >= policy.consecutiveFailures
                || (recent.count >= policy.minimumRequests && Double(failures) / Double(recent.count) >= policy.failureRatio) {
                open(now)
            }
        case .open:
            break  // a request that started before it opened
        }
    }

    /// A probe that ended without a verdict (cancelled by its client): let another one try.
    public mutating func releaseProbe(permit: Permit) {
        if permit == .probe, case .halfOpen(true, let s) = state { state = .halfOpen(probing: false, successes: s) }
    }

    private mutating func open(_ now: UInt64) {
        state = .open(until: now + openFor)
        timesOpened += 1
        consecutive = 0
    }

    private mutating func note(_ now: UInt64, failed: Bool) {
        recent.append((now, failed))
        let horizon = now > policy.windowNanos ? now - policy.windowNanos : 0
        if let first = recent.firstIndex(where: { $0.0 >= horizon }), first > 0 { recent.removeFirst(first) }
        if recent.count > 1000 { recent.removeFirst(recent.count - 1000) }
    }
}

/// What an upstream has been like lately: time to first token (EWMA and p95 of the last 128),
/// errors and timeouts, requests in flight, and throttling (429) — the router's inputs.
public struct UpstreamHealth: Sendable {
    public private(set) var ttftEWMANanos: Double = 0
    private var ttfts: [UInt64] = []
    private var next = 0
    public private(set) var inFlight = 0
    public private(set) var requests = 0
    public private(set) var errors = 0
    public private(set) var timeouts = 0
    public private(set) var throttled = 0
    /// Until then it answered 429: its weight is lowered (not a failure).
    public private(set) var throttledUntil: UInt64 = 0
    public private(set) var lastUsed: UInt64 = 0
    /// The last request a user (not a warmup) sent.
    public private(set) var lastUserRequest: UInt64 = 0

    public init() {}

    public mutating func started(now: UInt64, user: Bool = true) {
        inFlight += 1
        requests += 1
        lastUsed = now
        if user { lastUserRequest = now }
    }

    public mutating func ended() { inFlight = max(0, inFlight - 1) }

    public mutating func firstToken(afterNanos t: UInt64) {
        ttftEWMANanos = ttftEWMANanos == 0 ? Double(t) : ttftEWMANanos * 0.8 + Double(t) * 0.2
        if ttfts.count < 128 { ttfts.append(t) } else { ttfts[next] = t; next = (next + 1) % 128 }
    }

    public mutating func failed(timeout: Bool) {
        errors += 1
        if timeout { timeouts += 1 }
    }

    public mutating func throttle(until: UInt64) {
        throttled += 1
        throttledUntil = max(throttledUntil, until)
    }

    /// p95 of the recent first-token times; nil until there are some.
    public var ttftP95Nanos: UInt64? {
        guard ttfts.count >= 5 else { return nil }
        let s = ttfts.sorted()
        return s[min(s.count - 1, Int(Double(s.count) * 0.95))]
    }

    /// Lower is better: expected first-token time (+1 ms) scaled by load, ×1000 while throttled
    /// (chosen only when nothing else can take the request). An upstream with no history yet
    /// scores as if instant, so it is tried and learnt.
    public func score(now: UInt64) -> Double {
        (ttftEWMANanos + 1_000_000) * Double(1 + inFlight) * (now < throttledUntil ? 1000 : 1)
    }
}
