import Foundation
import Glibc
import XCTest
@testable import RedisCoordination

/// On a real Redis Cluster (3 masters, 3 replicas, started here by scripts/redis-cluster.sh):
/// every Lua script, run with the key set the code gives it on the master `ClusterSlots` picks,
/// is neither CROSSSLOT nor MOVED; keys of two users in one call are CROSSSLOT; a command sent to
/// the wrong master answers MOVED to the master the slot map names.
final class LiveClusterScriptTests: XCTestCase {
    static let root = ClusterHarness.root
    func sh(_ args: [String]) throws -> String { try ClusterHarness.sh(args) }

    func testEveryScriptRunsOnOneSlotOfARealCluster() throws {
        let dir = FileManager.default.temporaryDirectory.appendingPathComponent("cluster-\(UUID().uuidString)").path
        let base = 20_000 + Int.random(in: 0..<450) * 6  // (see ClusterHarness.start)
        let seeds = try sh(["start", dir, "\(base)"])
        defer { _ = try? sh(["stop", dir]); try? FileManager.default.removeItem(atPath: dir) }
        XCTAssertTrue(seeds.hasPrefix("redis-cluster://127.0.0.1:\(base),"), seeds)
        let seed = try BlockingRedis(endpoint: RedisEndpoint(url: "redis://127.0.0.1:\(base)/0")!)
        let map = try XCTUnwrap(ClusterSlots.Map(clusterSlots: try seed.call(["CLUSTER", "SLOTS"])))
        XCTAssertTrue(map.coversAllSlots)
        XCTAssertEqual(map.masters.count, 3)
        var connections: [ClusterSlots.Node: BlockingRedis] = [:]
        func on(_ node: ClusterSlots.Node) throws -> BlockingRedis {
            if let c = connections[node] { return c }
            let c = try BlockingRedis(endpoint: RedisEndpoint(url: "redis://\(node.host):\(node.port)/0")!)
            connections[node] = c
            return c
        }
        let lua = Self.root.appendingPathComponent("lua").path
        let fleet = FleetKeys(fleet: "main")
        let presets = PresetCacheKeys(namespace: PresetCacheKeys.namespace(forDatabaseURL: "postgresql://db/playground"))
        var calls: [(script: String, keys: [String])] = [
            ("enqueue", [fleet.stream(0), fleet.locator("cmpl-1")]), ("forget", [fleet.locator("cmpl-1")]),
            ("ack", [fleet.stream(0)]), ("reclaim", [fleet.stream(0), fleet.dead(0)]),
            ("beat", [fleet.nodeIndex, fleet.nodePrefix + "node-1", fleet.workerIndex]),
        ]
        for u in ["alice", "bob", "u-05e9f5d08a", "ünï"] {
            calls += [
                ("admit", [AdmissionKeys.window(u), AdmissionKeys.leases(u), AdmissionKeys.admitted(u), AdmissionKeys.quota(u)]),
                ("renew", [AdmissionKeys.leases(u)]), ("release", [AdmissionKeys.leases(u)]),
                ("unadmit", [AdmissionKeys.window(u), AdmissionKeys.leases(u), AdmissionKeys.admitted(u)]),
                ("preset_get", [presets.presets(u), presets.gone(u)]),
                ("preset_put", [presets.presets(u), presets.recent(u), presets.gone(u)]),
                ("preset_drop", [presets.presets(u), presets.recent(u), presets.gone(u)]),
                ("outbox_append", [presets.outbox(u), presets.presets(u), presets.recent(u), presets.gone(u), presets.outboxBytes(u)]),
                ("outbox_ack", [presets.outbox(u), presets.outboxBytes(u), presets.outboxUnreadable(u)]),
            ]
        }
        var slotsUsed = Set<Int>()
        for (name, keys) in calls {
            let script = try RedisScript.load(name, from: lua)
            let slot = ClusterSlots.slot(keys[0])
            slotsUsed.insert(slot)
            let node = try XCTUnwrap(map.master(for: slot))
            // Arguments do not matter here: Redis checks the keys' slots before the script runs.
            let conn = try on(node)
            if let e = serverError({ () throws(RedisError) in try conn.call(["EVAL", script.source, "\(keys.count)"] + keys + ["x", "1", "1", "1", "1", "1", "1", "1", "1"]) }) {
                XCTAssertFalse(e.hasPrefix("CROSSSLOT") || e.hasPrefix("MOVED") || e.hasPrefix("ASK"), "\(name) \(keys): \(e)")
            }
        }
        XCTAssertGreaterThan(slotsUsed.count, 3, "users and fleets land on different slots")
        // The failure this guards against: two users' keys in one call.
        let mixed = [AdmissionKeys.leases("alice"), AdmissionKeys.leases("bob")]
        XCTAssertNotEqual(ClusterSlots.slot(mixed[0]), ClusterSlots.slot(mixed[1]))
        let first = try on(try XCTUnwrap(map.master(forKey: mixed[0])))
        let crossed = serverError({ () throws(RedisError) in try first.call(["EVAL", "return 1", "2"] + mixed) })
        XCTAssertTrue(crossed?.hasPrefix("CROSSSLOT") == true, "two slots in one script must be refused: \(crossed ?? "answered")")
        // A key asked of the wrong master: MOVED, to the master the map names.
        let key = AdmissionKeys.leases("alice")
        let right = try XCTUnwrap(map.master(forKey: key))
        let wrong = try XCTUnwrap(map.masters.first { $0 != right })
        let wrongConn = try on(wrong)
        let moved = serverError({ () throws(RedisError) in try wrongConn.call(["ZCARD", key]) })
        XCTAssertEqual(moved.flatMap { ClusterSlots.Redirect(error: $0) }, .moved(slot: ClusterSlots.slot(key), to: right), moved ?? "answered")
        XCTAssertEqual(try on(right).call(["ZCARD", key]).integer, 0)
    }

    /// The server's error reply, or nil if the command was answered.
    func serverError(_ body: () throws(RedisError) -> RedisReply) -> String? {
        do { _ = try body(); return nil } catch {
            if case .server(let e) = error { return e }
            return "\(error)"
        }
    }
}
