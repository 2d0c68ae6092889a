import Domain
import Foundation
import JSON
import NetCore
import RedisCoordination
import Runtime
import Synchronization
import XCTest

/// lua/preset_*.lua and outbox_append.lua, the outbox drain and the identity cache on a real Redis.
class LivePresetCacheTests: RedisTestCase {
    static let luaDir = LiveAdmissionScriptTests.luaDir

    func keys() -> PresetCacheKeys { PresetCacheKeys(namespace: "t" + UUID().uuidString.prefix(8)) }

    func preset(_ id: String, version: Int, name: String = "N", user: String = "u") -> Preset {
        Preset(id: id, userID: user, name: name, description: "", tags: [], prompt: "v\(version)", parameters: JSONObject(),
               createdAt: "2026-12-01T10:00:00.000000Z", updatedAt: "2026-12-01T10:00:00.000000Z", version: version)
    }

    func wait<T: Sendable>(_ body: (@escaping @Sendable (T) -> Void) -> Void) -> T {
        let box = Mutex<T?>(nil)
        let done = DispatchSemaphore(value: 0)
        body { v in box.withLock { $0 = v }; done.signal() }
        done.wait()
        return box.withLock { $0! }
    }

    func lookup(_ c: RedisPresetCache, _ user: String, _ id: String) -> PresetCacheLookup {
        wait { done in c.lookup(user: user, id: id, done: done) }
    }

    func settleFills(_ c: RedisPresetCache, _ user: String) {
        // fill is fire-and-forget; a later call on the same connection runs after it.
        _ = wait { (done: @escaping @Sendable ([CachedPreset]?) -> Void) in c.recent(user: user, done: done) }
    }

    func testFillNeverReplacesNewerOrPendingAndTombstonesHold() throws {
        let cache = try RedisPresetCache(connection: try connect(), keys: keys(), scriptsDirectory: Self.luaDir)
        let id = UUIDText.make(Array(repeating: 1, count: 16))
        guard case .miss = lookup(cache, "u", id) else { return XCTFail() }
        cache.fill(user: "u", [preset(id, version: 3)])
        cache.fill(user: "u", [preset(id, version: 2)])  // an older read arriving late
        settleFills(cache, "u")
        guard case .hit(let c, let age) = lookup(cache, "u", id) else { return XCTFail() }
        XCTAssertLessThan(age, 5000, "stored a moment ago")
        XCTAssertEqual(c.preset.version, 3)
        XCTAssertFalse(c.pending)
        guard case .miss = lookup(cache, "someone-else", id) else { return XCTFail("per user") }
        // A pending write shows until the replayer settles it; a fill of the same version does not replace it.
        var f = PresetFields()
        f.prompt = "pending"
        let w = PresetWrite(key: UUIDText.make(Array(repeating: 2, count: 16)), op: .update, presetID: id, userID: "u", orgID: nil, fields: f,
                            queuedAt: "2026-12-01T10:00:01.000000Z")
        var shown = preset(id, version: 4)
        shown.prompt = "pending"
        let r: Result<Void, OutboxAppendError> = wait { done in cache.append(w, showing: shown, done: done) }
        guard case .success = r else { return XCTFail() }
        cache.fill(user: "u", [preset(id, version: 4)])
        settleFills(cache, "u")
        guard case .hit(let p, _) = lookup(cache, "u", id), p.pending, p.preset.prompt == "pending" else { return XCTFail() }
        XCTAssertEqual(wait { done in cache.hasQueued(user: "u", done: done) }, true)
        XCTAssertEqual(wait { done in cache.queued(user: "u", done: done) }?.map(\.key), [w.key])
        // Deleted: a tombstone keeps a late fill from bringing it back.
        XCTAssertTrue(wait { done in cache.drop(user: "u", id: id, tombstone: true, done: done) })
        cache.fill(user: "u", [preset(id, version: 9)])
        settleFills(cache, "u")
        guard case .deleted = lookup(cache, "u", id) else { return XCTFail() }
    }

    func testRecentKeepsTheNewestUpToTheCap() throws {
        var policy = PresetCachePolicy()
        policy.capPerUser = 5
        let cache = try RedisPresetCache(connection: try connect(), keys: keys(), policy: policy, scriptsDirectory: Self.luaDir)
        let presets = (0..<8).map { i -> Preset in
            var p = preset(UUIDText.make(Array(repeating: UInt8(i), count: 16)), version: 1, name: "p\(i)")
            p.createdAt = Timestamps.format(micros: 1_800_000_000_000_000 + Int64(i))
            return p
        }
        // Waited for: its script may be sent twice (NOSCRIPT on a fresh master, then EVAL), after the read.
        XCTAssertTrue(wait { done in cache.fill(user: "u", presets, done: done) })
        let recent = wait { done in cache.recent(user: "u", done: done) } ?? []
        XCTAssertEqual(Set(recent.map(\.preset.name)), ["p3", "p4", "p5", "p6", "p7"])
    }

    func testOutboxDrainReadsSettlesAndFinishes() throws {
        let k = keys()
        let cache = try RedisPresetCache(connection: try connect(), keys: k, scriptsDirectory: Self.luaDir)
        let drain = try RedisOutboxDrain(redis: try BlockingRedis(endpoint: endpoint), keys: k, scriptsDirectory: Self.luaDir)
        let id = UUIDText.make(Array(repeating: 7, count: 16))
        var f = PresetFields()
        f.name = "Q"
        f.prompt = "q"
        for n in 0..<3 {
            let w = PresetWrite(key: UUIDText.make(Array(repeating: UInt8(10 + n), count: 16)), op: n == 0 ? .create : .update, presetID: id,
                                userID: "u", orgID: nil, fields: f, queuedAt: "2026-12-01T10:00:0\(n).000000Z")
            let r: Result<Void, OutboxAppendError> = wait { done in cache.append(w, showing: preset(id, version: n + 1), done: done) }
            guard case .success = r else { return XCTFail() }
        }
        XCTAssertEqual(try drain.usersWithWrites(), ["u"])
        XCTAssertTrue(try drain.lock(user: "u", owner: "a", ttlMs: 5000))
        XCTAssertFalse(try drain.lock(user: "u", owner: "b", ttlMs: 5000), "one replayer per user")
        let batch = try drain.writes(user: "u", count: 10)
        XCTAssertEqual(batch.map { $0.write?.queuedAt }, ["2026-12-01T10:00:00.000000Z", "2026-12-01T10:00:01.000000Z", "2026-12-01T10:00:02.000000Z"],
                       "in the order accepted")
        try drain.settle(user: "u", presetID: id, applied: preset(id, version: 1))  // force: replaces the pending v3
        guard case .hit(let c, let age) = lookup(cache, "u", id) else { return XCTFail() }
        XCTAssertLessThan(age, 5000, "stored a moment ago")
        XCTAssertEqual(c.preset.version, 1)
        XCTAssertFalse(c.pending)
        for (entry, _) in batch { try drain.acknowledge(user: "u", entry: entry) }
        try drain.finish(user: "u")
        XCTAssertEqual(try drain.usersWithWrites(), [])
        try drain.unlock(user: "u", owner: "b")
        XCTAssertFalse(try drain.lock(user: "u", owner: "b", ttlMs: 5000), "another owner cannot unlock it")
        try drain.unlock(user: "u", owner: "a")
        XCTAssertTrue(try drain.lock(user: "u", owner: "b", ttlMs: 5000))
    }

    func testOutboxIsBoundedPerUser() throws {
        var policy = PresetCachePolicy()
        policy.maxQueuedPerUser = 2
        let cache = try RedisPresetCache(connection: try connect(), keys: keys(), policy: policy, scriptsDirectory: Self.luaDir)
        for n in 0..<3 {
            let w = PresetWrite(key: UUIDText.make(Array(repeating: UInt8(n), count: 16)), op: .delete, presetID: UUIDText.make(Array(repeating: 9, count: 16)),
                                userID: "u", orgID: nil, fields: PresetFields(), queuedAt: "2026-12-01T10:00:00.000000Z")
            let r: Result<Void, OutboxAppendError> = wait { done in cache.append(w, showing: nil, done: done) }
            switch (n, r) {
            case (0, .success), (1, .success), (2, .failure(.full(.userCount))): break
            default: XCTFail("write \(n): \(r)")
            }
        }
    }

    /// Issue 15 item 4: the outbox is bounded in bytes per user (in the script, atomically) and in
    /// total (a counter the room check reads); acknowledgements give the bytes back.
    func testOutboxIsBoundedInBytesPerUserAndInTotal() throws {
        var policy = PresetCachePolicy()
        let k = keys()
        func write(_ n: Int, prompt: Int, user: String = "u") -> PresetWrite {
            var f = PresetFields()
            f.prompt = String(repeating: "x", count: prompt)
            return PresetWrite(key: UUIDText.make(Array(repeating: UInt8(n), count: 16)), op: .create, presetID: UUIDText.make(Array(repeating: UInt8(n), count: 16)),
                               userID: user, orgID: nil, fields: f, queuedAt: "2026-12-01T10:00:00.000000Z")
        }
        let size = write(0, prompt: 10_000).encoded.utf8.count
        policy.maxQueuedBytesPerUser = size * 3 + size / 2  // three fit, the fourth does not
        policy.maxQueuedBytesTotal = size * 5 + size / 2    // five fit across users
        let cache = try RedisPresetCache(connection: try connect(), keys: k, policy: policy, scriptsDirectory: Self.luaDir)
        func append(_ w: PresetWrite) -> Result<Void, OutboxAppendError> { wait { done in cache.append(w, showing: nil, done: done) } }
        func room(_ user: String) -> OutboxAppendError? { wait { done in cache.room(user: user, bytes: size, done: done) } }
        for n in 0..<3 {
            XCTAssertNil(room("u"))
            guard case .success = append(write(n, prompt: 10_000)) else { return XCTFail("write \(n)") }
        }
        XCTAssertEqual(room("u"), .full(.userBytes), "the room check refuses before any work")
        guard case .failure(.full(.userBytes)) = append(write(3, prompt: 10_000)) else { return XCTFail("the script holds the bound too") }
        // Small writes still fit the user's bytes; the total bound counts every user.
        for n in 10..<12 { guard case .success = append(write(n, prompt: 10_000, user: "v")) else { return XCTFail() } }
        XCTAssertEqual(room("w"), .full(.totalBytes), "five writes of every user fill the total")
        // Applied writes give their bytes back.
        let drain = try RedisOutboxDrain(redis: try BlockingRedis(endpoint: endpoint), keys: k, policy: policy, scriptsDirectory: Self.luaDir)
        let batch = try drain.writes(user: "u", count: 10)
        XCTAssertEqual(batch.count, 3)
        try drain.acknowledge(user: "u", entry: batch[0].entry)
        XCTAssertNil(room("u"))
        XCTAssertNil(room("w"), "the total went down by the acknowledged write")
        try drain.bury(user: "u", entry: batch[1].entry)
        try drain.acknowledge(user: "u", entry: batch[2].entry)
        try drain.acknowledge(user: "u", entry: batch[2].entry)  // twice: nothing more taken off
        let conn = try connect()
        XCTAssertEqual(try call(conn, ["EXISTS", k.outboxBytes("u")]).get(), .integer(0), "an empty outbox keeps no count")
        XCTAssertEqual(try call(conn, ["XLEN", k.outboxUnreadable("u")]).get(), .integer(1), "a buried write is kept aside")
        XCTAssertEqual(try call(conn, ["GET", k.outboxTotalBytes]).get().string.flatMap { Int($0) }, 2 * (size - 0), "v's two writes")
    }

    func testIdentitiesAreSharedAndRevocationsWin() throws {
        let k = keys()
        let ids = RedisIdentityCache(connection: try connect(), keys: k)
        let alice = Identity(userID: "alice|x", orgID: "org", keyID: 41)
        let bob = Identity(userID: "bob", orgID: nil, keyID: 42)
        ids.remember(credentialHash: "h1", identity: alice)
        ids.remember(credentialHash: "h2", identity: bob)
        ids.remember(credentialHash: "h3", identity: bob)  // a session made from bob's key
        let found = wait { done in ids.recall(credentialHashes: ["h1", "h2", "h3", "nope"], done: done) }
        XCTAssertEqual(found, ["h1": .found(alice), "h2": .found(bob), "h3": .found(bob), "nope": .absent])
        XCTAssertTrue(wait { done in ids.revoke(.key(id: 42), pending: true, done: done) })
        XCTAssertTrue(wait { done in ids.revoke(.session(tokenHashHex: "h1"), pending: false, done: done) })
        let after = wait { done in ids.recall(credentialHashes: ["h1", "h2", "h3"], done: done) }
        XCTAssertEqual(after, ["h1": .revoked, "h2": .revoked, "h3": .revoked],
                       "an ended session stays refused (a node's own copy must not bring it back); a revoked key takes its sessions with it")
        let drain = try RedisOutboxDrain(redis: try BlockingRedis(endpoint: endpoint), keys: k, scriptsDirectory: Self.luaDir)
        XCTAssertEqual(try drain.pendingRevocations(), [.key(id: 42)], "to be written to the database later")
        try drain.revocationRecorded(.key(id: 42))
        XCTAssertEqual(try drain.pendingRevocations(), [])
        XCTAssertEqual(wait { done in ids.recall(credentialHashes: ["h2"], done: done) }, ["h2": .revoked], "still revoked (for the entries' lifetime)")
    }

    func testNamespacesFollowTheDatabaseNotItsPassword() {
        let a = PresetCacheKeys.namespace(forDatabaseURL: "postgresql://u:secret@db:5432/app")
        XCTAssertEqual(a, PresetCacheKeys.namespace(forDatabaseURL: "postgresql://u:other@db:5432/app?sslmode=require"))
        XCTAssertNotEqual(a, PresetCacheKeys.namespace(forDatabaseURL: "postgresql://u:secret@db:5432/other"))
        XCTAssertEqual(a.count, 8)
    }
}
