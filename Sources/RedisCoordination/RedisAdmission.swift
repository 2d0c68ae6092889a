import Domain
import NetCore
import Runtime

/// The keys of one user's admission state. All share the hash tag `{u:<user>}` (Redis Cluster).
public enum AdmissionKeys {
    public static func tag(_ user: String) -> String { "{u:\(user)}" }
    public static func window(_ user: String) -> String { tag(user) + ":win" }
    public static func leases(_ user: String) -> String { tag(user) + ":lease" }
    public static func admitted(_ user: String) -> String { tag(user) + ":adm" }
    public static func quota(_ user: String) -> String { tag(user) + ":quota" }
}

/// Admission for a fleet: `lua/admit.lua`, `renew.lua` and `release.lua` on one Redis, so a
/// user's limits hold across tabs, devices and nodes. Calls are short (a 250 ms timeout); when Redis
/// cannot answer, `fallback` decides (a per-node limiter), or the request is refused as busy.
public final class RedisAdmission: Admission, @unchecked Sendable {
    let connection: RedisClient
    let admitScript: RedisScript
    let renewScript: RedisScript
    let releaseScript: RedisScript
    let unadmitScript: RedisScript
    let defaults: Quota
    public let leaseTTLNanos: UInt64
    let windowMs: Int
    let timeoutNanos: UInt64
    let fallback: Admission?

    public init(connection: RedisClient, scriptsDirectory: String, defaults: Quota, leaseTTLNanos: UInt64,
                windowMs: Int = 60_000, timeoutNanos: UInt64 = 250_000_000, fallback: Admission?) throws(RedisScriptError) {
        self.connection = connection
        admitScript = try RedisScript.load("admit", from: scriptsDirectory)
        renewScript = try RedisScript.load("renew", from: scriptsDirectory)
        releaseScript = try RedisScript.load("release", from: scriptsDirectory)
        unadmitScript = try RedisScript.load("unadmit", from: scriptsDirectory)
        self.defaults = defaults
        self.leaseTTLNanos = leaseTTLNanos
        self.windowMs = windowMs
        self.timeoutNanos = timeoutNanos
        self.fallback = fallback
    }

    var loop: EventLoop { connection.loop }
    var leaseTTLMs: Int { Int(leaseTTLNanos / 1_000_000) }

    public func admit(user: String, requestID: String, done: @escaping @Sendable (AdmissionOutcome) -> Void) {
        let box = UncheckedBox(self)
        onLoop {
            let me = box.value
            let keys = [AdmissionKeys.window(user), AdmissionKeys.leases(user), AdmissionKeys.admitted(user),
                        AdmissionKeys.quota(user)]
            let args = [requestID, "\(me.defaults.requestsPerMinute)", "\(me.defaults.concurrency)", "\(me.leaseTTLMs)", "\(me.windowMs)"]
            me.connection.run(me.admitScript, keys: keys, args: args, timeoutNanos: me.timeoutNanos) { r in
                if case .success(let reply) = r, let outcome = RedisAdmission.outcome(reply) { return done(outcome) }
                if case .success(let reply) = r { me.connection.logger.warning("admit.lua answered unexpectedly", ["reply": "\(reply)"]) }
                if let fallback = me.fallback { fallback.admit(user: user, requestID: requestID, done: done) } else {
                    done(.unavailable(retryAfterMs: 500))
                }
            }
        }
    }

    /// admit.lua's reply → an outcome; nil if it is not one of the documented shapes.
    public static func outcome(_ reply: RedisReply) -> AdmissionOutcome? {
        guard let a = reply.array?.compactMap(\.integer), a.count == reply.array?.count, let kind = a.first else { return nil }
        switch (kind, a.count) {
        case (1, 5): return .admitted(AdmissionGrant(fence: a[1], limit: Int(a[2]), remaining: Int(a[3]), resetMs: Int(a[4])))
        case (2, 3): return .refused(.rateLimited(limit: Int(a[1]), retryAfterMs: Int(a[2])))
        case (3, 3): return .refused(.tooManyConcurrent(limit: Int(a[1]), retryAfterMs: Int(a[2])))
        case (4, 2): return .ended(fence: a[1])
        case (5, 2): return .running(fence: a[1])
        default: return nil
        }
    }

    public func renew(user: String, requestID: String) {
        let box = UncheckedBox(self)
        onLoop {
            let me = box.value
            me.connection.run(me.renewScript, keys: [AdmissionKeys.leases(user)], args: [requestID, "\(me.leaseTTLMs)"],
                              timeoutNanos: me.timeoutNanos * 4) { _ in }
        }
        fallback?.renew(user: user, requestID: requestID)
    }

    public func release(user: String, requestID: String) {
        let box = UncheckedBox(self)
        onLoop {
            let me = box.value
            // A lost release is not lost for long: the lease expires within its TTL.
            me.connection.run(me.releaseScript, keys: [AdmissionKeys.leases(user)], args: [requestID],
                              timeoutNanos: me.timeoutNanos * 4) { _ in }
        }
        fallback?.release(user: user, requestID: requestID)
    }

    public func unadmit(user: String, requestID: String, fence: Int64) {
        let box = UncheckedBox(self)
        onLoop {
            let me = box.value
            // Lost, it costs the user one place in the window until it leaves (never a second run).
            me.connection.run(me.unadmitScript, keys: [AdmissionKeys.window(user), AdmissionKeys.leases(user), AdmissionKeys.admitted(user)],
                              args: [requestID, "\(fence)"], timeoutNanos: me.timeoutNanos * 4) { _ in }
        }
        fallback?.unadmit(user: user, requestID: requestID, fence: fence)
    }

    private func onLoop(_ body: @escaping @Sendable () -> Void) {
        if loop.inEventLoop { body() } else { loop.execute(body) }
    }
}
