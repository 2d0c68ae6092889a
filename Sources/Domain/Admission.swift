/// What one user may do: requests in any 60 s, and generations at once.
public struct Quota: Sendable, Equatable {
    public var requestsPerMinute: Int
    public var concurrency: Int
    public init(requestsPerMinute: Int, concurrency: Int) {
        self.requestsPerMinute = requestsPerMinute
        self.concurrency = concurrency
    }
    public static let standard = Quota(requestsPerMinute: 60, concurrency: 2)
}

/// An admitted request: its fencing counter travels with the job; the rest feeds the
/// `x-ratelimit-*` headers.
public struct AdmissionGrant: Sendable, Equatable {
    public let fence: Int64
    public let limit: Int
    public let remaining: Int
    /// Until the oldest request in the window leaves it (a slot frees up), milliseconds.
    public let resetMs: Int
    public init(fence: Int64, limit: Int, remaining: Int, resetMs: Int) {
        self.fence = fence
        self.limit = limit
        self.remaining = remaining
        self.resetMs = resetMs
    }
}

public enum AdmissionRefusal: Sendable, Equatable {
    case rateLimited(limit: Int, retryAfterMs: Int)
    case tooManyConcurrent(limit: Int, retryAfterMs: Int)

    public var error: APIError {
        switch self {
        case .rateLimited(let limit, let ms):
            return APIError(.rateLimitExceeded, "at most \(limit) requests per minute; retry in \(max(1, (ms + 999) / 1000)) s", retryAfterMs: ms)
        case .tooManyConcurrent(let limit, let ms):
            return APIError(.concurrentGenerationsLimitExceeded,
                            "at most \(limit) generations at once; wait for one to finish or stop one", retryAfterMs: ms)
        }
    }
}

public enum AdmissionOutcome: Sendable, Equatable {
    case admitted(AdmissionGrant)
    /// This request id was admitted in the window and its generation has ended (its lease is
    /// gone): it never runs again. Its result may be replayed; nothing may be started for it.
    case ended(fence: Int64)
    /// This request id is running (or queued) under its first admission: attach to it; this
    /// request owns nothing (no lease to release, no admission to take back).
    case running(fence: Int64)
    case refused(AdmissionRefusal)
    /// The shared store cannot answer (and no fallback applies).
    case unavailable(retryAfterMs: Int)
}

/// Per-user admission, as it must behave wherever it runs: in memory here, and in Redis as
/// `lua/admit.lua`, `lua/renew.lua`, `lua/release.lua`, which follow these rules step for step.
///
/// 1. Idempotency: a request id already admitted is counted once and runs once: while its lease
///    lives, the same grant (attach to it); once the lease is gone, `.ended` (never run again).
/// 2. Concurrency first (expired holders dropped first), so a request refused for concurrency
///    uses no quota.
/// 3. Exact sliding window: at most N admissions in any `window`; a refused attempt is never
///    recorded, so a client that keeps knocking is admitted as soon as the oldest leaves.
/// Pure: time comes in as `now` (nanoseconds), so every edge is testable.
public struct AdmissionLedger: Sendable {
    public let windowNanos: UInt64
    public let leaseTTLNanos: UInt64
    private struct User {
        var window: [(id: String, at: UInt64)] = []   // oldest first, from `head`
        var head = 0
        var count: Int { window.count - head }
        var leases: [String: UInt64] = [:]           // request id → expiry
        var admitted: [String: AdmissionGrant] = [:] // request ids in the window, for idempotency
    }
    private var users: [String: User] = [:]
    private var fence: Int64 = 0

    public init(windowNanos: UInt64 = 60_000_000_000, leaseTTLNanos: UInt64 = 30_000_000_000) {
        self.windowNanos = windowNanos
        self.leaseTTLNanos = leaseTTLNanos
    }

    public mutating func admit(user: String, requestID: String, quota: Quota, now: UInt64) -> AdmissionOutcome {
        fence += 1  // taken back below unless admitted (fences stay dense and increasing)
        let next = fence
        let (window, ttl) = (windowNanos, leaseTTLNanos)
        let outcome = withUser(user, create: true) { u in
            Self.admit(&u, requestID: requestID, quota: quota, now: now, fence: next, windowNanos: window, leaseTTLNanos: ttl)
        }!  // `create: true` always answers
        if case .admitted = outcome {} else { fence -= 1 }
        return outcome
    }

    /// The user's state mutated in place: copying it out of the dictionary and back would copy
    /// its whole window on every call (copy-on-write), O(window) per admit. A user left with no
    /// state is dropped. nil when the user is unknown and `create` is false.
    private mutating func withUser<R>(_ user: String, create: Bool, _ body: (inout User) -> R) -> R? {
        if !create && users[user] == nil { return nil }
        var empty = false
        let r: R = Self.inPlace(&users[user, default: User()]) { u in
            let r = body(&u)
            empty = u.count == 0 && u.leases.isEmpty
            return r
        }
        if empty { users[user] = nil }
        return r
    }

    @inline(__always) private static func inPlace<R>(_ u: inout User, _ body: (inout User) -> R) -> R { body(&u) }

    private static func admit(_ u: inout User, requestID: String, quota: Quota, now: UInt64, fence: Int64, windowNanos: UInt64,
                              leaseTTLNanos: UInt64) -> AdmissionOutcome {
        prune(&u, now: now, windowNanos: windowNanos)
        if let g = u.admitted[requestID] {
            if let expiry = u.leases[requestID], expiry > now { return .running(fence: g.fence) }
            return .ended(fence: g.fence)
        }
        // Expired holders are dropped first (only when they could matter: at the limit).
        if u.leases.count >= quota.concurrency { u.leases = u.leases.filter { $0.value > now } }
        if u.leases.count >= quota.concurrency {
            let soonest = u.leases.values.min().map { $0 > now ? Int(($0 - now) / 1_000_000) : 0 } ?? 1000
            return .refused(.tooManyConcurrent(limit: quota.concurrency, retryAfterMs: max(1, min(soonest, 1000))))
        }
        if u.count >= quota.requestsPerMinute {
            // The window frees a place when its oldest admissions leave it.
            let k = u.head + u.count - quota.requestsPerMinute
            let leaves = u.window[k].at &+ windowNanos
            return .refused(.rateLimited(limit: quota.requestsPerMinute, retryAfterMs: max(1, Int((leaves - now + 999_999) / 1_000_000))))
        }
        u.window.append((requestID, now))
        u.leases[requestID] = now &+ leaseTTLNanos
        let reset = Int((u.window[u.head].at &+ windowNanos - now) / 1_000_000)
        let g = AdmissionGrant(fence: fence, limit: quota.requestsPerMinute, remaining: quota.requestsPerMinute - u.count, resetMs: reset)
        u.admitted[requestID] = g
        return .admitted(g)
    }

    /// Extends a live lease; an expired or released one is never brought back (false).
    public mutating func renew(user: String, requestID: String, now: UInt64) -> Bool {
        let ttl = leaseTTLNanos
        return withUser(user, create: false) { u in
            guard let expiry = u.leases[requestID], expiry > now else { return false }
            u.leases[requestID] = now &+ ttl
            return true
        } ?? false
    }

    /// Frees the lease; idempotent.
    public mutating func release(user: String, requestID: String) {
        _ = withUser(user, create: false) { u in u.leases[requestID] = nil }
    }

    /// Takes back an admission whose request never started (refused as busy after admission): its
    /// window entry, lease and record go, so it used no quota and the id can be retried at once.
    /// Only the admission with `fence` is taken back.
    public mutating func unadmit(user: String, requestID: String, fence: Int64) {
        _ = withUser(user, create: false) { u in
            guard let g = u.admitted[requestID], g.fence == fence else { return }
            u.admitted[requestID] = nil
            u.leases[requestID] = nil
            // Rare (the busy path) and usually the newest entry: searched from the end.
            if let i = u.window[u.head...].lastIndex(where: { $0.id == requestID }) { u.window.remove(at: i) }
        }
    }

    public func leasesHeld(user: String, now: UInt64) -> Int {
        users[user]?.leases.values.filter { $0 > now }.count ?? 0
    }

    /// Users with any state (bounded by activity in the last window or lease TTL).
    public var trackedUsers: Int { users.count }

    /// Forgets what has expired everywhere (call now and then: idle users are dropped).
    public mutating func sweep(now: UInt64) {
        let window = windowNanos
        for key in Array(users.keys) {
            _ = withUser(key, create: false) { u in
                Self.prune(&u, now: now, windowNanos: window)
                u.leases = u.leases.filter { $0.value > now }
            }
        }
    }

    /// Drops window entries that left it: O(what left), the array compacted only when mostly dead.
    private static func prune(_ u: inout User, now: UInt64, windowNanos: UInt64) {
        while u.head < u.window.count, u.window[u.head].at &+ windowNanos <= now {
            u.admitted[u.window[u.head].id] = nil
            u.head += 1
        }
        if u.head == u.window.count {
            u.window.removeAll(keepingCapacity: u.window.count < 1024)
            u.head = 0
        } else if u.head > 1024 && u.head * 2 > u.window.count {
            u.window.removeFirst(u.head)
            u.head = 0
        }
    }
}

/// Admission as the completion flow sees it (a port): in memory on one node, or in Redis for a
/// fleet. `done` may be called on any thread.
public protocol Admission: AnyObject, Sendable {
    func admit(user: String, requestID: String, done: @escaping @Sendable (AdmissionOutcome) -> Void)
    /// Keeps a running generation's lease alive (every TTL/3).
    func renew(user: String, requestID: String)
    /// Frees the lease; idempotent; called on every way a generation ends.
    func release(user: String, requestID: String)
    /// Takes back the admission with `fence` of a request that never started (refused as busy
    /// after it was admitted): no quota used, the id retryable at once.
    func unadmit(user: String, requestID: String, fence: Int64)
    var leaseTTLNanos: UInt64 { get }
}

extension Quota {
    /// This node's share when the fleet's shared limits cannot be checked.
    public func dividedAmong(_ nodes: Int) -> Quota {
        let n = max(1, nodes)
        return Quota(requestsPerMinute: requestsPerMinute == .max ? .max : max(1, requestsPerMinute / n),
                     concurrency: concurrency == .max ? .max : max(1, concurrency / n))
    }
}
