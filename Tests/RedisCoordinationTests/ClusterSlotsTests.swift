import Foundation
import XCTest
@testable import RedisCoordination

/// Slot routing against the spec's examples and against a real cluster-enabled redis-server's own
/// CLUSTER KEYSLOT; every script's keys in one slot; CLUSTER SLOTS and redirections parsed.
final class ClusterSlotsTests: XCTestCase {
    func testTheSpecsExamples() {
        XCTAssertEqual(ClusterSlots.crc16(Array("123456789".utf8)), 0x31C3, "the CRC16 check value")
        XCTAssertEqual(ClusterSlots.slot("foo"), 12182)
        XCTAssertEqual(ClusterSlots.slot("bar"), 5061)
        XCTAssertEqual(ClusterSlots.slot("{user1000}.following"), ClusterSlots.slot("{user1000}.followers"))
        XCTAssertEqual(ClusterSlots.slot("foo{}{bar}"), ClusterSlots.slot(Array("foo{}{bar}".utf8)), "an empty tag: the whole key")
        XCTAssertEqual(Array(ClusterSlots.hashedPart(Array("foo{}{bar}".utf8))), Array("foo{}{bar}".utf8))
        XCTAssertEqual(Array(ClusterSlots.hashedPart(Array("foo{{bar}}zap".utf8))), Array("{bar".utf8))
        XCTAssertEqual(Array(ClusterSlots.hashedPart(Array("foo{bar}{zap}".utf8))), Array("bar".utf8))
        XCTAssertEqual(Array(ClusterSlots.hashedPart(Array("{".utf8))), Array("{".utf8))
        XCTAssertEqual(ClusterSlots.slot(""), 0)
    }

    /// Every script call's keys, as the code builds them, share a slot (else CROSSSLOT on a cluster).
    func testEveryScriptsKeysShareOneSlot() {
        let users = ["alice", "u-05e9f5d08a", "ünïcødé", "{odd}", "a}b{c", ""]
        let fleet = FleetKeys(fleet: "main")
        let presets = PresetCacheKeys(namespace: PresetCacheKeys.namespace(forDatabaseURL: "postgresql://db/playground"))
        var sets: [[String]] = [
            [fleet.stream(0), fleet.locator("cmpl-1")],                    // enqueue.lua
            [fleet.stream(0), fleet.dead(0)],                                          // reclaim.lua
            [fleet.nodeIndex, fleet.nodePrefix + "node-1", fleet.workerIndex],   // beat.lua
        ]
        for u in users {
            sets.append([AdmissionKeys.window(u), AdmissionKeys.leases(u), AdmissionKeys.admitted(u), AdmissionKeys.quota(u)])  // admit, unadmit
            sets.append([presets.presets(u), presets.recent(u), presets.gone(u)])                                              // preset_put/get/drop
            sets.append([presets.outbox(u), presets.presets(u), presets.recent(u), presets.gone(u), presets.outboxBytes(u)])   // outbox_append
            sets.append([presets.outbox(u), presets.outboxBytes(u), presets.outboxUnreadable(u), presets.outboxLock(u)])       // outbox_ack, drain
        }
        for keys in sets {
            XCTAssertEqual(Set(keys.map(ClusterSlots.slot)).count, 1, "\(keys)")
        }
        XCTAssertNotEqual(ClusterSlots.slot(AdmissionKeys.leases("alice")), ClusterSlots.slot(AdmissionKeys.leases("bob")),
                          "users spread over slots (these two happen to differ)")
    }

    func testClusterSlotsReply() throws {
        func node(_ h: String, _ p: Int64) -> RedisReply { .array([.bulk(Array(h.utf8)), .integer(p), .bulk(Array("id".utf8))]) }
        let reply = RedisReply.array([
            .array([.integer(5461), .integer(10922), node("10.0.0.2", 7001), node("10.0.0.5", 7004)]),
            .array([.integer(0), .integer(5460), node("10.0.0.1", 7000)]),
            .array([.integer(10923), .integer(16383), node("10.0.0.3", 7002)]),
        ])
        let map = try XCTUnwrap(ClusterSlots.Map(clusterSlots: reply))
        XCTAssertTrue(map.coversAllSlots)
        XCTAssertEqual(map.master(for: 0)?.port, 7000)
        XCTAssertEqual(map.master(for: 5461)?.port, 7001)
        XCTAssertEqual(map.master(for: 16383)?.port, 7002)
        XCTAssertEqual(map.master(forKey: "foo")?.port, 7002, "slot 12182")
        XCTAssertEqual(map.masters.map(\.port), [7000, 7001, 7002])
        let partial = try XCTUnwrap(ClusterSlots.Map(clusterSlots: .array([.array([.integer(0), .integer(99), node("h", 1)])])))
        XCTAssertFalse(partial.coversAllSlots)
        XCTAssertNil(partial.master(for: 100), "a slot no master serves")
        XCTAssertNil(ClusterSlots.Map(clusterSlots: .array([.array([.integer(0), .integer(10), node("h", 1)]),
                                                            .array([.integer(10), .integer(20), node("h", 2)])])), "overlap")
        XCTAssertNil(ClusterSlots.Map(clusterSlots: .array([.array([.integer(0), .integer(16384), node("h", 1)])])), "past the last slot")
        XCTAssertNil(ClusterSlots.Map(clusterSlots: .error("ERR This instance has cluster support disabled")))
        XCTAssertNil(ClusterSlots.Map(clusterSlots: .array([.array([.integer(0)])])))
    }

    func testRedirections() {
        XCTAssertEqual(ClusterSlots.Redirect(error: "MOVED 3999 127.0.0.1:6381"), .moved(slot: 3999, to: .init(host: "127.0.0.1", port: 6381)))
        XCTAssertEqual(ClusterSlots.Redirect(error: "ASK 3999 [::1]:6381"), .ask(slot: 3999, to: .init(host: "::1", port: 6381)))
        XCTAssertEqual(ClusterSlots.Redirect(error: "TRYAGAIN Multiple keys request during rehashing of slot"), .tryAgain)
        XCTAssertEqual(ClusterSlots.Redirect(error: "CLUSTERDOWN The cluster is down"), .clusterDown)
        for bad in ["MOVED", "MOVED x 1.2.3.4:1", "MOVED 16384 h:1", "MOVED 1 h", "MOVED 1 h:0", "ERR wrong", "", "CROSSSLOT Keys in request don't hash to the same slot"] {
            XCTAssertNil(ClusterSlots.Redirect(error: bad), bad)
        }
    }

    /// A cluster-enabled redis-server of our own (no slots needed) answers CLUSTER KEYSLOT: the oracle.
    func testSlotsAgreeWithRedisItself() throws {
        let dir = FileManager.default.temporaryDirectory.appendingPathComponent("slots-\(UUID().uuidString)")
        try FileManager.default.createDirectory(at: dir, withIntermediateDirectories: true)
        defer { try? FileManager.default.removeItem(at: dir) }
        let port = 20_000 + Int.random(in: 0..<10_000)
        let server = Process()
        server.executableURL = URL(fileURLWithPath: "/usr/bin/redis-server")
        server.arguments = ["--port", "\(port)", "--bind", "127.0.0.1", "--cluster-enabled", "yes", "--cluster-config-file",
                            dir.appendingPathComponent("nodes.conf").path, "--dir", dir.path, "--save", "", "--appendonly", "no"]
        server.standardOutput = FileHandle.nullDevice
        try server.run()
        defer { server.terminate(); server.waitUntilExit() }
        var redis: BlockingRedis?
        for _ in 0..<100 {
            if let r = try? BlockingRedis(endpoint: RedisEndpoint(url: "redis://127.0.0.1:\(port)/0")!), (try? r.call(["PING"]))?.string == "PONG" {
                redis = r
                break
            }
            usleep(50_000)
        }
        let r = try XCTUnwrap(redis, "the cluster-enabled redis-server did not start")
        var keys = ["foo", "bar", "", "{", "}", "{}", "a{}b", "foo{{bar}}zap", "foo{bar}{zap}", "{u:alice}:lease", "ünïcødé", "{jobs:main}:stream"]
        var rng = SystemRandomNumberGenerator()
        let alphabet = Array("ab{}:xyz0189-é".unicodeScalars)
        for _ in 0..<500 {
            var s = String.UnicodeScalarView()
            for _ in 0..<Int.random(in: 0...12, using: &rng) { s.append(alphabet.randomElement(using: &rng)!) }
            keys.append(String(s))
        }
        for k in keys {
            let theirs = try r.call(["CLUSTER", "KEYSLOT", k]).integer
            XCTAssertEqual(theirs.map(Int.init), ClusterSlots.slot(k), "'\(k)'")
        }
    }
}
