import Domain
import NetCore
import Runtime
import Synchronization

/// Where presets, the outbox and identities live in Redis. `namespace` names the database they
/// come from (several deployments, or tests, may share one Redis). A user's preset keys share the
/// hash tag `{p:<ns>:<user>}` (one script touches them all; Redis Cluster).
public struct PresetCacheKeys: Sendable {
    public let namespace: String
    public init(namespace: String) { self.namespace = namespace }

    /// A short stable name for a database URL: FNV-1a of its host, port and database name
    /// (not its password, which may change).
    public static func namespace(forDatabaseURL url: String) -> String {
        var s = Substring(url)
        if let r = s.range(ofLiteral: "://") { s = s[r.upperBound...] }
        if let at = s.lastIndex(of: "@") { s = s[s.index(after: at)...] }
        if let q = s.firstIndex(of: "?") { s = s[..<q] }
        var h: UInt32 = 2_166_136_261
        for b in s.utf8 { h = (h ^ UInt32(b)) &* 16_777_619 }
        let hex = String(h, radix: 16)
        return String(repeating: "0", count: 8 - hex.count) + hex
    }

    func tag(_ user: String) -> String { "{p:\(namespace):\(user)}" }
    public func presets(_ user: String) -> String { tag(user) + ":presets" }
    public func recent(_ user: String) -> String { tag(user) + ":recent" }
    public func gone(_ user: String) -> String { tag(user) + ":gone" }
    public func outbox(_ user: String) -> String { tag(user) + ":outbox" }
    public func outboxLock(_ user: String) -> String { tag(user) + ":outbox-lock" }
    /// The bytes of the user's queued writes (outbox_append.lua adds, outbox_ack.lua takes off).
    public func outboxBytes(_ user: String) -> String { tag(user) + ":outbox-bytes" }
    public func outboxUnreadable(_ user: String) -> String { outbox(user) + "-unreadable" }
    /// Every user's queued bytes (not in any user's slot: kept beside the scripts, a soft bound
    /// reset whenever no user has writes waiting).
    public var outboxTotalBytes: String { "playground:outbox:\(namespace):bytes" }
    /// Users with writes waiting (the replayer's index).
    public var outboxUsers: String { "playground:outbox:\(namespace):users" }

    public func credential(_ hash: String) -> String { "id:\(namespace):c:\(hash)" }
    public func revokedKey(_ id: Int64) -> String { "id:\(namespace):rk:\(id)" }
    public func endedSession(_ hash: String) -> String { "id:\(namespace):rs:\(hash)" }
    /// Revocations the database has not recorded yet ("key:<id>", "session:<hash>").
    public var pendingRevocations: String { "id:\(namespace):pending" }
}

/// Tunables shared by the cache, the outbox and the replayer.
public struct PresetCachePolicy: Sendable {
    /// A user's cache keys live this long after their last cache write.
    public var ttlMs = 24 * 3600 * 1000
    /// Presets kept per user (newest by creation): the sidebar's first pages and degraded search.
    public var capPerUser = 200
    /// How long a deleted preset's tombstone keeps older reads from bringing it back.
    public var tombstoneMs = 3600 * 1000
    /// Writes one user may have waiting in the outbox.
    public var maxQueuedPerUser = 10_000
    /// Bytes of writes one user may have waiting (a few hundred large presets).
    public var maxQueuedBytesPerUser = 16 << 20
    /// Bytes of writes every user together may have waiting: Redis memory the outbox may take.
    public var maxQueuedBytesTotal = 512 << 20
    /// How long an identity stays usable from the shared cache (and a revocation is remembered).
    public var identityTTLMs = 3600 * 1000
    /// Redis calls on a request's path give up after this long (the request then acts as if the
    /// cache were down).
    public var timeoutNanos: UInt64 = 250_000_000
    public init() {}
}

/// The shared preset cache and outbox (lua/preset_*.lua, outbox_append.lua) on a node's command
/// connection. Calls hop to the connection's loop; `done` runs there.
/// Something whose calls run on its Redis connection's loop.
protocol OnConnectionLoop: AnyObject {
    var connection: RedisClient { get }
}

extension OnConnectionLoop {
    /// Runs `body` on the connection's loop (at once if already there).
    func onLoop(_ body: @escaping @Sendable (Self) -> Void) {
        let box = UncheckedBox(self)
        if connection.loop.inEventLoop { body(self) } else { connection.loop.execute { body(box.value) } }
    }
}

public final class RedisPresetCache: PresetCache, PresetOutbox, OnConnectionLoop, @unchecked Sendable {
    let connection: RedisClient
    let keys: PresetCacheKeys
    let policy: PresetCachePolicy
    let putScript, getScript, dropScript, appendScript: RedisScript

    public init(connection: RedisClient, keys: PresetCacheKeys, policy: PresetCachePolicy = PresetCachePolicy(),
                scriptsDirectory: String) throws(RedisScriptError) {
        self.connection = connection
        self.keys = keys
        self.policy = policy
        putScript = try RedisScript.load("preset_put", from: scriptsDirectory)
        getScript = try RedisScript.load("preset_get", from: scriptsDirectory)
        dropScript = try RedisScript.load("preset_drop", from: scriptsDirectory)
        appendScript = try RedisScript.load("outbox_append", from: scriptsDirectory)
    }

    /// An entry "<version>|<C|P>|<stored at ms>|<json>" → the preset and when it was stored.
    static func entry(_ s: String) -> (preset: CachedPreset, storedAtMs: Int64)? {
        let parts = s.split(separator: "|", maxSplits: 3, omittingEmptySubsequences: false)
        guard parts.count == 4, let at = Int64(parts[2]),
              let c = CachedPreset.decode(String(parts[3]), pending: parts[1] == "P") else { return nil }
        return (c, at)
    }

    // MARK: PresetCache

    public func lookup(user: String, id: String, done: @escaping @Sendable (PresetCacheLookup) -> Void) {
        onLoop { me in
            me.connection.run(me.getScript, keys: [me.keys.presets(user), me.keys.gone(user)], args: [id, "\(me.policy.tombstoneMs)"],
                              timeoutNanos: me.policy.timeoutNanos) { r in
                switch r {
                case .success(.null): done(.miss)
                case .success(.array(let a)) where a.count == 2:
                    guard let s = a[0].string, let now = a[1].integer, let e = RedisPresetCache.entry(s), e.preset.preset.userID == user else {
                        return done(.miss)
                    }
                    done(.hit(e.preset, ageMs: Int(max(0, now - e.storedAtMs))))
                case .success(let reply) where reply.string == "D": done(.deleted)
                default: done(.unavailable)
                }
            }
        }
    }

    public func fill(user: String, _ presets: [Preset], done: @escaping @Sendable (Bool) -> Void) {
        guard !presets.isEmpty else { return done(true) }
        store(user: user, presets.map { CachedPreset(preset: $0, pending: false) }, mode: "fill", done: done)
    }

    func store(user: String, _ presets: [CachedPreset], mode: String, done: @escaping @Sendable (Bool) -> Void) {
        onLoop { me in
            var args = [mode, "\(me.policy.ttlMs)", "\(me.policy.capPerUser)", "\(me.policy.tombstoneMs)"]
            for c in presets {
                args += [c.preset.id, "\(c.preset.version)", c.pending ? "P" : "C", "\(c.createdScore)", c.encoded]
            }
            me.connection.run(me.putScript, keys: [me.keys.presets(user), me.keys.recent(user), me.keys.gone(user)], args: args,
                              timeoutNanos: me.policy.timeoutNanos) { r in
                if case .success(let reply) = r, reply.integer != nil { done(true) } else { done(false) }
            }
        }
    }

    public func drop(user: String, id: String, tombstone: Bool, done: @escaping @Sendable (Bool) -> Void) {
        onLoop { me in
            me.connection.run(me.dropScript, keys: [me.keys.presets(user), me.keys.recent(user), me.keys.gone(user)],
                              args: [id, tombstone ? "tombstone" : "forget", "\(me.policy.ttlMs)"], timeoutNanos: me.policy.timeoutNanos) { r in
                if case .success(let reply) = r, !reply.isError { done(true) } else { done(false) }
            }
        }
    }

    public func recent(user: String, done: @escaping @Sendable ([CachedPreset]?) -> Void) {
        onLoop { me in
            me.connection.send(["HVALS", me.keys.presets(user)], timeoutNanos: me.policy.timeoutNanos) { r in
                guard case .success(let reply) = r, let values = reply.array else { return done(nil) }
                done(values.compactMap { $0.string.flatMap(RedisPresetCache.entry)?.preset }.filter { $0.preset.userID == user })
            }
        }
    }

    // MARK: PresetOutbox

    public func hasQueued(user: String, done: @escaping @Sendable (Bool?) -> Void) {
        onLoop { me in
            me.connection.send(["XLEN", me.keys.outbox(user)], timeoutNanos: me.policy.timeoutNanos) { r in
                if case .success(let reply) = r, let n = reply.integer { done(n > 0) } else { done(nil) }
            }
        }
    }

    public func room(user: String, bytes: Int, done: @escaping @Sendable (OutboxAppendError?) -> Void) {
        onLoop { me in
            let p = me.policy
            // Two commands (on a cluster, to two masters, answered in any order): decided when both are in.
            var userState: (Int, Int)?, totalState: Int?, answered = 0
            func decide() {
                answered += 1
                guard answered == 2 else { return }
                guard let (n, b) = userState, let total = totalState else { return done(.unavailable) }
                if n >= p.maxQueuedPerUser { return done(.full(.userCount)) }
                // As outbox_append.lua counts: an empty outbox holds no bytes, whatever a lost
                // acknowledgement left in the counter.
                if (n == 0 ? 0 : b) + bytes > p.maxQueuedBytesPerUser { return done(.full(.userBytes)) }
                if total + bytes > p.maxQueuedBytesTotal { return done(.full(.totalBytes)) }
                done(nil)
            }
            me.connection.send(["EVAL", "return {redis.call('XLEN', KEYS[1]), tonumber(redis.call('GET', KEYS[2]) or '0')}", "2",
                                me.keys.outbox(user), me.keys.outboxBytes(user)], timeoutNanos: p.timeoutNanos) { r in
                if case .success(let reply) = r, let a = reply.array, a.count == 2, let n = a[0].integer, let b = a[1].integer {
                    userState = (Int(n), Int(b))
                }
                decide()
            }
            me.connection.send(["GET", me.keys.outboxTotalBytes], timeoutNanos: p.timeoutNanos) { r in
                if case .success(let reply) = r, !reply.isError { totalState = reply.string.flatMap { Int($0) } ?? 0 }
                decide()
            }
        }
    }

    public func append(_ write: PresetWrite, showing: Preset?, done: @escaping @Sendable (Result<Void, OutboxAppendError>) -> Void) {
        onLoop { me in
            let user = write.userID
            // The index first: if the script then fails, the replayer finds an empty stream (harmless).
            me.connection.send(["SADD", me.keys.outboxUsers, user], timeoutNanos: me.policy.timeoutNanos) { _ in }
            let shown = showing.map { CachedPreset(preset: $0, pending: true) }
            let encoded = write.encoded
            let args = ["\(me.policy.maxQueuedPerUser)", encoded, write.presetID, "\(me.policy.ttlMs)", shown == nil ? "gone" : "show",
                        "\(shown?.preset.version ?? 0)", "\(shown?.createdScore ?? 0)", shown?.encoded ?? "", "\(me.policy.maxQueuedBytesPerUser)"]
            me.connection.run(me.appendScript, keys: [me.keys.outbox(user), me.keys.presets(user), me.keys.recent(user), me.keys.gone(user),
                                                      me.keys.outboxBytes(user)],
                              args: args, timeoutNanos: me.policy.timeoutNanos * 4) { r in
                switch r {
                case .success(.error(let e)) where e.hasPrefix("FULL bytes"): done(.failure(.full(.userBytes)))
                case .success(.error(let e)) where e.hasPrefix("FULL"): done(.failure(.full(.userCount)))
                case .success(let reply) where reply.string != nil && !reply.isError:
                    me.connection.send(["INCRBY", me.keys.outboxTotalBytes, "\(encoded.utf8.count)"], timeoutNanos: me.policy.timeoutNanos) { _ in }
                    done(.success(()))
                default: done(.failure(.unavailable))
                }
            }
        }
    }

    public func queued(user: String, done: @escaping @Sendable ([PresetWrite]?) -> Void) {
        onLoop { me in
            me.connection.send(["XRANGE", me.keys.outbox(user), "-", "+", "COUNT", "1000"], timeoutNanos: me.policy.timeoutNanos) { r in
                guard case .success(let reply) = r, let entries = reply.array else { return done(nil) }
                done(entries.compactMap(RedisPresetCache.write(fromEntry:)))
            }
        }
    }

    /// One XRANGE entry ([id, [field, value, …]]) → its write.
    static func write(fromEntry e: RedisReply) -> PresetWrite? {
        guard let parts = e.array, parts.count == 2, let fields = parts[1].array, fields.count >= 2, let json = fields[1].string else { return nil }
        return PresetWrite.decode(json)
    }
}

/// The shared identity cache: the last good answer per credential hash, and revocation markers
/// that outlive every entry they cancel. Plain keys (one per credential), no scripts.
public final class RedisIdentityCache: SharedIdentityCache, OnConnectionLoop, @unchecked Sendable {
    let connection: RedisClient
    let keys: PresetCacheKeys
    let policy: PresetCachePolicy

    public init(connection: RedisClient, keys: PresetCacheKeys, policy: PresetCachePolicy = PresetCachePolicy()) {
        self.connection = connection
        self.keys = keys
        self.policy = policy
    }

    /// "<key id>|<user>|<org>" (org empty when none).
    static func encode(_ i: Identity) -> String { "\(i.keyID)|\(i.userID)|\(i.orgID ?? "")" }

    static func decode(_ s: String) -> Identity? {
        guard let a = s.firstIndex(of: "|"), let id = Int64(s[..<a]) else { return nil }
        let rest = s[s.index(after: a)...]
        guard let b = rest.lastIndex(of: "|") else { return nil }
        let org = String(rest[rest.index(after: b)...])
        return Identity(userID: String(rest[..<b]), orgID: org.isEmpty ? nil : org, keyID: id)
    }

    public func remember(credentialHash: String, identity: Identity) {
        onLoop { me in
            me.connection.send(["SET", me.keys.credential(credentialHash), RedisIdentityCache.encode(identity), "PX", "\(me.policy.identityTTLMs)"],
                               timeoutNanos: me.policy.timeoutNanos) { _ in }
        }
    }

    public func recall(credentialHashes: [String], done: @escaping @Sendable ([String: IdentityRecall]?) -> Void) {
        onLoop { me in
            let pending = RecallState(count: credentialHashes.count, done: done)
            for h in credentialHashes {
                // The entry, the session marker and (once the entry names its key) the key's marker.
                me.connection.send(["GET", me.keys.credential(h)], timeoutNanos: me.policy.timeoutNanos) { r in
                    guard case .success(let reply) = r else { return pending.fail() }
                    guard let s = reply.string, let identity = RedisIdentityCache.decode(s) else {
                        // No entry (never seen, expired, or removed at sign-out): a node's own copy may
                        // still be asked, unless the session was ended.
                        me.connection.send(["EXISTS", me.keys.endedSession(h)], timeoutNanos: me.policy.timeoutNanos) { r in
                            guard case .success(let reply) = r, let n = reply.integer else { return pending.fail() }
                            pending.set(h, n > 0 ? .revoked : .absent)
                        }
                        return
                    }
                    // Two keys in two slots (on a cluster): one EXISTS each, answered in any order.
                    var answers = 0, revoked = false, failed = false
                    for key in [me.keys.revokedKey(identity.keyID), me.keys.endedSession(h)] {
                        me.connection.send(["EXISTS", key], timeoutNanos: me.policy.timeoutNanos) { r in
                            answers += 1
                            if case .success(let reply) = r, let n = reply.integer { revoked = revoked || n > 0 } else { failed = true }
                            guard answers == 2 else { return }
                            if failed { return pending.fail() }
                            pending.set(h, revoked ? .revoked : .found(identity))
                        }
                    }
                }
            }
        }
    }

    public func revoke(_ r: Revocation, pending: Bool, done: @escaping @Sendable (Bool) -> Void) {
        onLoop { me in
            let ttl = ["PX", "\(me.policy.identityTTLMs)"]
            switch r {
            case .key(let id):
                // Until the database has it, the marker must not expire.
                me.connection.send(["SET", me.keys.revokedKey(id), "1"] + (pending ? [] : ttl), timeoutNanos: me.policy.timeoutNanos) { r in
                    if case .success(.status) = r { done(true) } else { done(false) }
                }
                if pending { me.connection.send(["SADD", me.keys.pendingRevocations, "key:\(id)"], timeoutNanos: me.policy.timeoutNanos) { _ in } }
            case .session(let hash):
                me.connection.send(["DEL", me.keys.credential(hash)], timeoutNanos: me.policy.timeoutNanos) { _ in }
                me.connection.send(["SET", me.keys.endedSession(hash), "1"] + (pending ? [] : ttl), timeoutNanos: me.policy.timeoutNanos) { r in
                    if case .success(.status) = r { done(true) } else { done(false) }
                }
                if pending { me.connection.send(["SADD", me.keys.pendingRevocations, "session:\(hash)"], timeoutNanos: me.policy.timeoutNanos) { _ in } }
            case .recheckAll:
                done(true)
            }
        }
    }

    /// Collects per-credential answers; answers once, with nil if any call failed.
    final class RecallState: @unchecked Sendable {
        var left: Int
        var found: [String: IdentityRecall] = [:]
        var failed = false
        let done: @Sendable ([String: IdentityRecall]?) -> Void
        init(count: Int, done: @escaping @Sendable ([String: IdentityRecall]?) -> Void) {
            left = count
            self.done = done
            if count == 0 { done([:]) }
        }
        func set(_ h: String, _ r: IdentityRecall) { found[h] = r; step() }
        func fail() { failed = true; step() }
        private func step() {
            left -= 1
            if left == 0 { done(failed ? nil : found) }
        }
    }
}

/// The replayer's side of the outbox, over a blocking connection of its own.
public final class RedisOutboxDrain: OutboxDrain {
    let redis: BlockingRedis
    let keys: PresetCacheKeys
    let policy: PresetCachePolicy
    let putScript, dropScript, ackScript: RedisScript
    /// Deletes the lease only if it is still ours (it may have expired and been taken over).
    static let unlockScript = RedisScript(name: "unlock", source: "if redis.call('GET', KEYS[1]) == ARGV[1] then return redis.call('DEL', KEYS[1]) end return 0")

    public init(redis: BlockingRedis, keys: PresetCacheKeys, policy: PresetCachePolicy = PresetCachePolicy(),
                scriptsDirectory: String) throws(RedisScriptError) {
        self.redis = redis
        self.keys = keys
        self.policy = policy
        putScript = try RedisScript.load("preset_put", from: scriptsDirectory)
        dropScript = try RedisScript.load("preset_drop", from: scriptsDirectory)
        ackScript = try RedisScript.load("outbox_ack", from: scriptsDirectory)
    }

    public func usersWithWrites() throws -> [String] {
        let users = (try redis.call(["SMEMBERS", keys.outboxUsers]).array ?? []).compactMap(\.string)
        // Nothing waits anywhere: the fleet-wide byte count is exactly zero (whatever drift lost
        // acknowledgements left in it).
        if users.isEmpty { _ = try redis.call(["DEL", keys.outboxTotalBytes]) }
        return users
    }

    public func lock(user: String, owner: String, ttlMs: Int) throws -> Bool {
        try redis.call(["SET", keys.outboxLock(user), owner, "NX", "PX", "\(ttlMs)"]) == .status("OK")
    }

    public func unlock(user: String, owner: String) throws {
        _ = try redis.run(RedisOutboxDrain.unlockScript, keys: [keys.outboxLock(user)], args: [owner])
    }

    public func writes(user: String, count: Int) throws -> [(entry: String, write: PresetWrite?)] {
        let entries = try redis.call(["XRANGE", keys.outbox(user), "-", "+", "COUNT", "\(count)"]).array ?? []
        return entries.compactMap { e in
            guard let id = e.array?.first?.string else { return nil }
            return (id, RedisPresetCache.write(fromEntry: e))
        }
    }

    public func acknowledge(user: String, entry: String) throws { try remove(user: user, entry: entry, mode: "ack") }

    public func bury(user: String, entry: String) throws { try remove(user: user, entry: entry, mode: "bury") }

    private func remove(user: String, entry: String, mode: String) throws {
        let size = try redis.run(ackScript, keys: [keys.outbox(user), keys.outboxBytes(user), keys.outboxUnreadable(user)],
                                 args: [entry, mode]).integer ?? 0
        if size > 0 { _ = try redis.call(["DECRBY", keys.outboxTotalBytes, "\(size)"]) }
    }

    public func settle(user: String, presetID: String, applied preset: Preset?) throws {
        let k = [keys.presets(user), keys.recent(user), keys.gone(user)]
        if let preset {
            let c = CachedPreset(preset: preset, pending: false)
            _ = try redis.run(putScript, keys: k, args: ["force", "\(policy.ttlMs)", "\(policy.capPerUser)", "\(policy.tombstoneMs)",
                                                          preset.id, "\(preset.version)", "C", "\(c.createdScore)", c.encoded])
        } else {
            _ = try redis.run(dropScript, keys: k, args: [presetID, "forget", "\(policy.ttlMs)"])
        }
    }

    public func finish(user: String) throws {
        _ = try redis.call(["SREM", keys.outboxUsers, user])
        // A write appended meanwhile added the user before its XADD; if it came after our SREM,
        // the stream is not empty now: put the user back.
        if (try redis.call(["XLEN", keys.outbox(user)]).integer ?? 0) > 0 { _ = try redis.call(["SADD", keys.outboxUsers, user]) }
    }

    public func pendingRevocations() throws -> [Revocation] {
        (try redis.call(["SMEMBERS", keys.pendingRevocations]).array ?? []).compactMap { r in
            guard let s = r.string else { return nil }
            if s.hasPrefix("key:"), let id = Int64(s.dropFirst(4)) { return .key(id: id) }
            if s.hasPrefix("session:") { return .session(tokenHashHex: String(s.dropFirst(8))) }
            return nil
        }
    }

    public func revocationRecorded(_ r: Revocation) throws {
        switch r {
        case .key(let id):
            _ = try redis.call(["PEXPIRE", keys.revokedKey(id), "\(policy.identityTTLMs)"])
            _ = try redis.call(["SREM", keys.pendingRevocations, "key:\(id)"])
        case .session(let h):
            _ = try redis.call(["PEXPIRE", keys.endedSession(h), "\(policy.identityTTLMs)"])
            _ = try redis.call(["SREM", keys.pendingRevocations, "session:\(h)"])
        case .recheckAll: break
        }
    }
}
