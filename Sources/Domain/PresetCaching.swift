import JSON

// The ports through which presets and identities outlive a PostgreSQL outage: a shared cache of
// presets, an outbox of writes accepted while the database was down, and a shared cache of
// identities. The gateway talks to these; RedisCoordination implements them; the replayer
// (Storage) drains the outbox into the database.

/// A preset as the shared cache holds it: the preset, and whether it is a write the database has
/// not seen yet (accepted into the outbox).
public struct CachedPreset: Sendable {
    public var preset: Preset
    public var pending: Bool
    public init(preset: Preset, pending: Bool) {
        self.preset = preset
        self.pending = pending
    }

    /// Creation time as a sortable number (µs since the epoch): the cache orders a user's recent
    /// presets by it, newest first, like the database's listing.
    public var createdScore: Int64 { Timestamps.micros(preset.createdAt) ?? 0 }

    /// The cache's value: the preset's API JSON plus its owner.
    public var encoded: String {
        var w = JSONWriter(capacity: 512 + preset.prompt.utf8.count)
        preset.write(&w, owner: true)
        return w.string
    }

    public static func decode(_ json: String, pending: Bool) -> CachedPreset? {
        guard let o = (try? JSONParser.parse(json))?.objectValue, let p = Preset(json: o) else { return nil }
        return CachedPreset(preset: p, pending: pending)
    }
}

public enum PresetCacheLookup: Sendable {
    /// `ageMs`: how long ago it was stored.
    case hit(CachedPreset, ageMs: Int)
    /// Deleted a moment ago (a tombstone): not found, without asking the database.
    case deleted
    case miss
    case unavailable
}

/// The shared read-through cache of presets (one per fleet's Redis). `done` may run on any thread.
public protocol PresetCache: AnyObject, Sendable {
    func lookup(user: String, id: String, done: @escaping @Sendable (PresetCacheLookup) -> Void)
    /// Stores what the database answered; an entry never replaces a newer version of itself, nor
    /// brings back one deleted a moment ago. `done` tells whether the cache took it.
    func fill(user: String, _ presets: [Preset], done: @escaping @Sendable (Bool) -> Void)
    /// Forgets a preset: `tombstone` when it was deleted (a racing fill cannot bring it back).
    func drop(user: String, id: String, tombstone: Bool, done: @escaping @Sendable (Bool) -> Void)
    /// The user's cached presets (the newest ones), or nil when the cache cannot answer.
    func recent(user: String, done: @escaping @Sendable ([CachedPreset]?) -> Void)
}

extension PresetCache {
    /// Fills without waiting (reads: the answer does not depend on it).
    public func fill(user: String, _ presets: [Preset]) { fill(user: user, presets) { _ in } }
}

/// A write accepted while the preset store was down: applied to the database later, exactly once
/// (its `key` is recorded by the database in the same transaction as the write).
public struct PresetWrite: Sendable, Equatable {
    public enum Op: String, Sendable { case create, update, delete }
    public var key: String
    public var op: Op
    public var presetID: String
    public var userID: String
    public var orgID: String?
    public var fields: PresetFields
    /// When it was accepted (the preset's created/updated time once applied).
    public var queuedAt: String

    public init(key: String, op: Op, presetID: String, userID: String, orgID: String?, fields: PresetFields, queuedAt: String) {
        self.key = key
        self.op = op
        self.presetID = presetID
        self.userID = userID
        self.orgID = orgID
        self.fields = fields
        self.queuedAt = queuedAt
    }

    public var encoded: String {
        var w = JSONWriter(capacity: 512 + (fields.prompt?.utf8.count ?? 0))
        w.beginObject()
        w.key("key"); w.string(key)
        w.key("op"); w.string(op.rawValue)
        w.key("id"); w.string(presetID)
        w.key("user"); w.string(userID)
        if let orgID { w.key("org"); w.string(orgID) }
        w.key("at"); w.string(queuedAt)
        w.key("fields"); fields.write(&w)
        w.endObject()
        return w.string
    }

    public static func decode(_ json: String) -> PresetWrite? {
        guard let o = (try? JSONParser.parse(json))?.objectValue, let key = o["key"]?.stringValue,
              let op = o["op"]?.stringValue.flatMap(Op.init(rawValue:)), let id = o["id"]?.stringValue,
              let user = o["user"]?.stringValue, let at = o["at"]?.stringValue, let f = o["fields"]?.objectValue else { return nil }
        return PresetWrite(key: key, op: op, presetID: id, userID: user, orgID: o["org"]?.stringValue, fields: PresetFields(json: f), queuedAt: at)
    }
}

public enum OutboxAppendError: Error, Sendable, Equatable {
    /// A bound was reached: the user's writes waiting (count or bytes), or every user's bytes.
    case full(OutboxBound)
    case unavailable
}

/// The bounds of the outbox, each with its limit: what a refusal names.
public enum OutboxBound: String, Sendable, Equatable {
    case userCount = "user_count", userBytes = "user_bytes", totalBytes = "total_bytes"
}

/// Where writes wait while the database is down (one ordered stream per user). `done` may run on any thread.
public protocol PresetOutbox: AnyObject, Sendable {
    /// Whether the user has writes waiting (new writes must queue behind them to keep their
    /// order); nil when the outbox cannot answer.
    func hasQueued(user: String, done: @escaping @Sendable (Bool?) -> Void)
    /// Whether a write of `bytes` would fit now (nil), or which bound refuses it; one cheap call,
    /// made before any costly work so a refusal costs the node next to nothing.
    func room(user: String, bytes: Int, done: @escaping @Sendable (OutboxAppendError?) -> Void)
    /// Appends the write and, in the same step, shows its result in the cache (`showing`: the
    /// preset as it will be; nil for a delete).
    func append(_ write: PresetWrite, showing: Preset?, done: @escaping @Sendable (Result<Void, OutboxAppendError>) -> Void)
    /// The user's writes still waiting, oldest first; nil when the outbox cannot answer.
    func queued(user: String, done: @escaping @Sendable ([PresetWrite]?) -> Void)
}

/// The replayer's side of the outbox (blocking calls, on the replayer's own thread).
public protocol OutboxDrain: AnyObject {
    func usersWithWrites() throws -> [String]
    /// A lease so one node at a time replays a user (order per user).
    func lock(user: String, owner: String, ttlMs: Int) throws -> Bool
    func unlock(user: String, owner: String) throws
    /// The oldest waiting writes: (stream entry id, write); an undecodable entry has a nil write.
    func writes(user: String, count: Int) throws -> [(entry: String, write: PresetWrite?)]
    func acknowledge(user: String, entry: String) throws
    /// Moves an entry that cannot be applied out of the way (kept aside, not deleted).
    func bury(user: String, entry: String) throws
    /// After a write was applied: the cache shows `preset` (the database's copy), or forgets the
    /// preset when nil (it failed, or its result is unknown).
    func settle(user: String, presetID: String, applied preset: Preset?) throws
    /// Takes the user off the index when nothing is waiting (re-adds it if a write raced in).
    func finish(user: String) throws
    /// Revocations recorded while the database was down, still to be written to it.
    func pendingRevocations() throws -> [Revocation]
    func revocationRecorded(_ r: Revocation) throws
}

/// Identities shared by every node: the last good answer per credential (by its SHA-256 in hex),
/// so a credential any node saw keeps working while the database is down.
public protocol SharedIdentityCache: AnyObject, Sendable {
    func remember(credentialHash: String, identity: Identity)
    /// What the cache knows of each credential; nil when the cache cannot answer.
    func recall(credentialHashes: [String], done: @escaping @Sendable ([String: IdentityRecall]?) -> Void)
    /// Removes the credential(s) at once and remembers the revocation, so no node honours them.
    /// `pending`: the database has not recorded it yet (the replayer will).
    func revoke(_ r: Revocation, pending: Bool, done: @escaping @Sendable (Bool) -> Void)
}

public enum IdentityRecall: Sendable, Equatable {
    case found(Identity)
    /// Revoked (the key, or the session ended): refuse, whatever a node's own copy says.
    case revoked
    /// Never seen, or expired.
    case absent
}

/// ISO-8601 UTC timestamps as the API shows them (`2026-11-30T22:16:19.123456Z`).
public enum Timestamps {
    /// µs since the epoch, or nil if `s` is not in the API's format.
    public static func micros(_ s: String) -> Int64? {
        let u = Array(s.utf8)
        guard u.count >= 20, u[4] == 45, u[7] == 45, u[10] == 84, u[13] == 58, u[16] == 58, u.last == 90 else { return nil }
        func num(_ r: Range<Int>) -> Int64? {
            var v: Int64 = 0
            for i in r { guard u[i] >= 48 && u[i] <= 57 else { return nil }; v = v * 10 + Int64(u[i] - 48) }
            return v
        }
        guard let y = num(0..<4), let mo = num(5..<7), let d = num(8..<10), let h = num(11..<13), let mi = num(14..<16),
              let se = num(17..<19), (1...12).contains(mo), h < 24, mi < 60, se < 60 else { return nil }
        let leap = y % 4 == 0 && (y % 100 != 0 || y % 400 == 0)
        guard y >= 1, d >= 1, d <= [31, leap ? 29 : 28, 31, 30, 31, 30, 31, 31, 30, 31, 30, 31][Int(mo) - 1] else { return nil }
        var frac: Int64 = 0
        if u.count > 20 {
            guard u[19] == 46 else { return nil }
            let digits = u.count - 21
            guard digits >= 1 && digits <= 6, let f = num(20..<(u.count - 1)) else { return nil }
            frac = f
            for _ in digits..<6 { frac *= 10 }
        }
        // Days from the civil date (proleptic Gregorian), H. Hinnant's algorithm.
        let yy = mo <= 2 ? y - 1 : y
        let era = (yy >= 0 ? yy : yy - 399) / 400
        let yoe = yy - era * 400
        let doy = (153 * (mo + (mo > 2 ? -3 : 9)) + 2) / 5 + d - 1
        let doe = yoe * 365 + yoe / 4 - yoe / 100 + doy
        let days = era * 146_097 + doe - 719_468
        return ((days * 86_400 + h * 3600 + mi * 60 + se) * 1_000_000) + frac
    }

    /// The API's format for µs since the epoch.
    public static func format(micros: Int64) -> String {
        let secs = micros >= 0 ? micros / 1_000_000 : (micros - 999_999) / 1_000_000
        let frac = micros - secs * 1_000_000
        var days = secs >= 0 ? secs / 86_400 : (secs - 86_399) / 86_400
        let rem = secs - days * 86_400
        days += 719_468
        let era = (days >= 0 ? days : days - 146_096) / 146_097
        let doe = days - era * 146_097
        let yoe = (doe - doe / 1460 + doe / 36_524 - doe / 146_096) / 365
        let doy = doe - (365 * yoe + yoe / 4 - yoe / 100)
        let mp = (5 * doy + 2) / 153
        let d = doy - (153 * mp + 2) / 5 + 1
        let m = mp < 10 ? mp + 3 : mp - 9
        let y = yoe + era * 400 + (m <= 2 ? 1 : 0)
        func pad(_ v: Int64, _ n: Int) -> String { let s = String(v); return String(repeating: "0", count: max(0, n - s.count)) + s }
        return "\(pad(y, 4))-\(pad(m, 2))-\(pad(d, 2))T\(pad(rem / 3600, 2)):\(pad(rem % 3600 / 60, 2)):\(pad(rem % 60, 2)).\(pad(frac, 6))Z"
    }
}
