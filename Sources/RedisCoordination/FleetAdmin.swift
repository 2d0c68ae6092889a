import Domain
import JSON

/// What the admin CLI reads and writes in Redis (blocking, one command at a time): quota
/// overrides, the fleet's status, and revocations recorded in the shared identity cache. The
/// CLI formats; the keys and commands live here.
public enum FleetAdmin {
    /// A user's quota override as stored: nil fields use the node defaults. `ttlMs`: -1 never
    /// expires, -2 no override at all.
    public struct QuotaOverride: Sendable, Equatable {
        public let rpm: String?
        public let concurrency: String?
        public let ttlMs: Int64
        public var exists: Bool { ttlMs != -2 }
    }

    public static func setQuota(_ r: BlockingRedis, user: String, rpm: Int?, concurrency: Int?, ttlMs: Int?) throws(RedisError) {
        var fields: [String] = []
        if let rpm { fields += ["rpm", "\(rpm)"] }
        if let concurrency { fields += ["concurrency", "\(concurrency)"] }
        let key = AdmissionKeys.quota(user)
        _ = try r.call(["HSET", key] + fields)
        _ = try r.call(ttlMs.map { ["PEXPIRE", key, "\($0)"] } ?? ["PERSIST", key])
    }

    public static func quota(_ r: BlockingRedis, user: String) throws(RedisError) -> QuotaOverride {
        let key = AdmissionKeys.quota(user)
        let v = try r.call(["HMGET", key, "rpm", "concurrency"]).array ?? []
        let ttl = try r.call(["PTTL", key]).integer ?? -2
        return QuotaOverride(rpm: v.first?.string, concurrency: v.count > 1 ? v[1].string : nil, ttlMs: ttl)
    }

    /// false: there was no override.
    public static func clearQuota(_ r: BlockingRedis, user: String) throws(RedisError) -> Bool {
        (try r.call(["DEL", AdmissionKeys.quota(user)]).integer ?? 0) > 0
    }

    /// Users with an override, as their keys name them (not checked: the caller decides what to
    /// do with a name no command would have written).
    public static func quotaUsers(_ r: BlockingRedis) throws(RedisError) -> [String] {
        try r.scan("{u:*}:quota").sorted().compactMap { k in
            guard k.hasPrefix("{u:"), let close = k.lastIndex(of: "}") else { return nil }
            return String(k[k.index(k.startIndex, offsetBy: 3)..<close])
        }
    }

    /// A live node: its id, role, and (workers with a models file) its upstreams' state.
    public struct Node: Sendable {
        public let id: String
        public let role: String
        public let upstreams: [JSONObject]
    }

    public struct Status: Sendable {
        public var nodes: [Node] = []
        public var backlog: Int64 = 0
        /// Handed to a worker that has not started it yet (a dead one's are reclaimed).
        public var pending: Int64 = 0
        public var deadLettered: Int64 = 0
        /// Per shard (backlog, pending, dead-lettered) when the queue has more than one.
        public var shards: [(backlog: Int64, pending: Int64, dead: Int64)] = []
        public var leases = 0
        public var leaseUsers = 0
        /// The preset outbox of one database (when asked for): writes waiting, their users, and
        /// revocations not recorded in the database yet.
        public var outbox: (writes: Int64, users: Int, revocations: Int64)?
    }

    public static func status(_ r: BlockingRedis, fleet: FleetKeys, presets: PresetCacheKeys?) throws(RedisError) -> Status {
        var s = Status()
        let now = try nowMs(r)
        for n in (try r.call(["ZRANGEBYSCORE", fleet.nodeIndex, "(\(now)", "+inf"]).array ?? []).compactMap(\.string).sorted() {
            let role = try r.call(["GET", fleet.nodePrefix + n]).string ?? "?"
            var ups: [JSONObject] = []
            if let json = try r.call(["GET", fleet.upstreamsPrefix + n]).string, let a = (try? JSONParser.parse(json))?.arrayValue {
                ups = a.compactMap(\.objectValue)
            }
            s.nodes.append(Node(id: n, role: role, upstreams: ups))
        }
        for shard in 0..<fleet.shards {
            let stream = fleet.stream(shard)
            let backlog = try r.call(["XLEN", stream]).integer ?? 0
            var pending: Int64 = 0
            // (A fleet that never queued a job has no stream yet: XINFO answers "no such key".)
            if (try r.call(["EXISTS", stream]).integer ?? 0) > 0, case .array(let groups) = try r.call(["XINFO", "GROUPS", stream]) {
                for g in groups {
                    let f = g.array ?? []
                    if let i = f.firstIndex(where: { $0.string == "pending" }), i + 1 < f.count { pending += f[i + 1].integer ?? 0 }
                }
            }
            let dead = try r.call(["XLEN", fleet.dead(shard)]).integer ?? 0
            s.backlog += backlog
            s.pending += pending
            s.deadLettered += dead
            if fleet.shards > 1 { s.shards.append((backlog, pending, dead)) }
        }
        let leaseNow = try nowMs(r)
        for k in try r.scan("{u:*}:lease") {
            let n = Int(try r.call(["ZCOUNT", k, "(\(leaseNow)", "+inf"]).integer ?? 0)
            s.leases += n
            if n > 0 { s.leaseUsers += 1 }
        }
        if let pk = presets {
            let waiting = (try r.call(["SMEMBERS", pk.outboxUsers]).array ?? []).compactMap(\.string)
            var writes: Int64 = 0
            for u in waiting { writes += try r.call(["XLEN", pk.outbox(u)]).integer ?? 0 }
            s.outbox = (writes, waiting.count, try r.call(["SCARD", pk.pendingRevocations]).integer ?? 0)
        }
        return s
    }

    /// Tells every node through the shared identity cache that key `id` is revoked. `untilRecorded`:
    /// the database is down; the revocation is also queued for it (kept until recorded), else it
    /// lives as long as cached identities do.
    public static func revokeInCache(_ r: BlockingRedis, keys: PresetCacheKeys, keyID id: Int64, untilRecorded: Bool) throws(RedisError) {
        if untilRecorded {
            _ = try r.call(["SET", keys.revokedKey(id), "1"])
            _ = try r.call(["SADD", keys.pendingRevocations, "key:\(id)"])
        } else {
            _ = try r.call(["SET", keys.revokedKey(id), "1", "PX", "\(PresetCachePolicy().identityTTLMs)"])
        }
    }

    /// The number of job shards a fleet uses (kept in Redis by its first node); 1 if none is kept.
    public static func shards(_ r: BlockingRedis, fleet: String) throws(RedisError) -> Int {
        Int(try r.call(["GET", FleetKeys(fleet: fleet).shardsKey]).string ?? "1") ?? 1
    }

    /// Records `shards` for the fleet unless it has a number already; the fleet's number.
    public static func agreeOnShards(_ r: BlockingRedis, fleet: String, shards: Int) throws(RedisError) -> Int {
        _ = try r.call(["SET", FleetKeys(fleet: fleet).shardsKey, "\(shards)", "NX"])
        return try Self.shards(r, fleet: fleet)
    }

    /// Redis's clock, milliseconds.
    static func nowMs(_ r: BlockingRedis) throws(RedisError) -> Int64 {
        let t = try r.call(["TIME"]).array ?? []
        return (t.first?.integer ?? 0) * 1000 + (t.count > 1 ? (t[1].integer ?? 0) / 1000 : 0)
    }
}
