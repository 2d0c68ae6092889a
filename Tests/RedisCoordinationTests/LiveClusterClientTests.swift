import Domain
import Foundation
import Glibc
import NetCore
@testable import RedisCoordination
import Runtime
import Synchronization
import XCTest

/// `RedisClient` and `RedisSubscriber` on a real Redis Cluster (3 masters, 3 replicas, started
/// here): from one seed the client finds every master and sends each command to its slot's
/// master; scripts, the sharded job queue and sharded pub/sub work; a slot moved under it is
/// followed (ASK while it migrates, MOVED after); a master killed fails its slots' commands fast,
/// never hangs, and once its replica took over the same client and subscriber work again.
final class LiveClusterClientTests: RedisTestCase {
    func testRoutingScriptsQueuePubSubRedirectsAndFailover() throws {
        let cluster = try ClusterHarness.start()
        defer { ClusterHarness.stop(cluster.dir) }
        // One seed is enough: the rest comes from CLUSTER SLOTS.
        let endpoint = try XCTUnwrap(RedisEndpoint(url: "redis-cluster://127.0.0.1:\(cluster.base)"))
        XCTAssertTrue(endpoint.isCluster)
        let client = try connect(endpoint)
        let claims = try connect(endpoint)
        let c = UncheckedBox(client)
        try waitUntil { c.value.masters.count == 3 }

        // Routing: keys over many slots, each stored on the master its slot map names.
        var direct: [ClusterSlots.Node: BlockingRedis] = [:]
        func on(_ n: ClusterSlots.Node) throws -> BlockingRedis {
            if let c = direct[n] { return c }
            let c = try BlockingRedis(endpoint: RedisEndpoint(host: n.host, port: n.port))
            direct[n] = c
            return c
        }
        defer { for c in direct.values { c.close() } }
        let map = try XCTUnwrap(ClusterSlots.Map(clusterSlots: try on(.init(host: "127.0.0.1", port: cluster.base)).call(["CLUSTER", "SLOTS"])))
        var mastersUsed = Set<ClusterSlots.Node>()
        for i in 0..<200 {
            XCTAssertEqual(try call(client, ["SET", "k:\(i)", "v\(i)"]).get(), .status("OK"), "k:\(i)")
        }
        for i in stride(from: 0, to: 200, by: 7) {
            let node = try XCTUnwrap(map.master(forKey: "k:\(i)"))
            mastersUsed.insert(node)
            XCTAssertEqual(try on(node).call(["GET", "k:\(i)"]).string, "v\(i)", "stored on its slot's master")
        }
        XCTAssertEqual(mastersUsed.count, 3)
        // A keyless command goes to some master; a script by SHA-1 is sent again as source on NOSCRIPT.
        XCTAssertEqual(try call(client, ["PING"]).get(), .status("PONG"))
        let script = RedisScript(name: "t", source: "return redis.call('INCR', KEYS[1])")
        let incr = Mutex<Result<RedisReply, RedisError>?>(nil)
        loop.execute { c.value.run(script, keys: ["{u:zoe}:n"], args: [], timeoutNanos: 1_000_000_000) { r in incr.withLock { $0 = r } } }
        try waitUntil { incr.withLock { $0 } != nil }
        XCTAssertEqual(try incr.withLock { $0! }.get(), .integer(1))
        // Two slots in one script stay refused (CROSSSLOT), not silently split.
        let crossed = try call(client, ["EVAL", "return 1", "2", "{u:alice}:x", "{u:bob}:x"]).get()
        XCTAssertTrue(crossed.string == nil && "\(crossed)".contains("CROSSSLOT"), "\(crossed)")

        // The sharded job queue: 6 shards over 3 masters, every job claimed once, per-shard reads.
        let keys = FleetKeys(fleet: "cluster", shards: 6)
        let q = try RedisJobQueue(connection: client, claims: claims, scriptsDirectory: LiveAdmissionScriptTests.luaDir, maxBacklog: 1000, keys: keys)
        XCTAssertTrue(LiveJobQueueTests.wait { done in q.prepare { done($0) } })
        for i in 0..<30 {
            let r = LiveJobQueueTests.wait { done in q.enqueue(LiveJobQueueTests.job("c-\(i)"), streamKey: "u/c-\(i)", holder: "gw") { done($0) } }
            guard case .success(.queued) = r else { return XCTFail("\(r)") }
        }
        XCTAssertEqual(LiveJobQueueTests.wait { done in q.backlog { done($0) } }, 30)
        XCTAssertEqual(Set((0..<30).map { map.master(forKey: keys.stream(keys.shard(of: "u/c-\($0)")))! }).count, 3, "shards on every master")
        var claimed: [QueuedJob] = []
        let until = Date().addingTimeInterval(10)
        while claimed.count < 30 && Date() < until {
            let got = try LiveJobQueueTests.wait { done in q.claim(consumer: "w", max: 4, blockMs: 300) { done($0) } }.get()
            XCTAssertLessThanOrEqual(got.count, 4, "never more than asked")
            claimed += got
        }
        XCTAssertEqual(Set(claimed.compactMap { $0.job?.request.requestID }), Set((0..<30).map { "c-\($0)" }))
        XCTAssertEqual(claimed.count, 30, "each once")
        for j in claimed { q.ack(j.id) }
        // An empty queue: a blocking claim waits its blockMs (in turns of at most clusterBlockMs
        // on one shard, looking at every shard between them), then answers nothing.
        let t0 = Date()
        XCTAssertEqual(try LiveJobQueueTests.wait { done in q.claim(consumer: "w", max: 4, blockMs: 400) { done($0) } }.get().count, 0)
        XCTAssertGreaterThan(Date().timeIntervalSince(t0), 0.35)
        XCTAssertLessThan(Date().timeIntervalSince(t0), 1.5)
        XCTAssertEqual(LiveJobQueueTests.wait { done in q.backlog { done($0) } }, 0)

        // Sharded pub/sub: SSUBSCRIBE on each channel's master, SPUBLISH counts exactly.
        let subscriber = RedisSubscriber(client: claims, logger: logger)
        let relay = RedisEventRelay(publisher: client, subscriber: subscriber)
        let channels = (0..<6).map { "gw:node-\($0)" }
        XCTAssertEqual(Set(channels.compactMap { map.master(forKey: $0) }).count, 3, "channels on every master")
        let got = Mutex<[String: [String]]>([:])
        for ch in channels {
            relay.subscribe(channel: ch) { m in if case .keepalive(let id) = m { got.withLock { $0[ch, default: []].append(id) } } }
        }
        let sub = UncheckedBox(subscriber)
        try waitUntil { sub.value.isSubscribed }
        func publish(_ ch: String, _ id: String) throws -> Int? {
            let n = Mutex<Int??>(nil)
            relay.publish(channel: ch, .keepalive(requestID: id)) { v in n.withLock { $0 = .some(v) } }
            try waitUntil { n.withLock { $0 } != nil }
            return n.withLock { $0! }
        }
        var counted: [Int?] = []
        for ch in channels { for i in 0..<20 { counted.append(try publish(ch, "\(ch)#\(i)")) } }
        XCTAssertEqual(Set(counted), [1], "each message reached exactly the one subscriber")
        try waitUntil { got.withLock { g in channels.allSatisfy { g[$0]?.count == 20 } } }
        XCTAssertEqual(got.withLock { $0["gw:node-3"] }, (0..<20).map { "gw:node-3#\($0)" }, "in order")
        XCTAssertEqual(try publish("gw:nobody", "x"), 0, "nobody listens: the publisher can tell")

        // A slot moved under the client: ASK while it migrates, MOVED once it has.
        let key = "k:moving"
        let slot = ClusterSlots.slot(key)
        let from = try XCTUnwrap(map.master(for: slot))
        let to = try XCTUnwrap(map.masters.first { $0 != from })
        XCTAssertEqual(try call(client, ["SET", key, "before"]).get(), .status("OK"))
        // A channel in that slot: when the slot leaves its master the server unsubscribes it there
        // (sunsubscribe), and the subscriber places it on the new master.
        relay.subscribe(channel: key) { m in if case .keepalive(let id) = m { got.withLock { $0[key, default: []].append(id) } } }
        try waitUntil { sub.value.isSubscribed }
        XCTAssertEqual(try publish(key, "before-move"), 1)
        let fromID = try XCTUnwrap(try on(from).call(["CLUSTER", "MYID"]).string)
        let toID = try XCTUnwrap(try on(to).call(["CLUSTER", "MYID"]).string)
        _ = try on(to).call(["CLUSTER", "SETSLOT", "\(slot)", "IMPORTING", fromID])
        _ = try on(from).call(["CLUSTER", "SETSLOT", "\(slot)", "MIGRATING", toID])
        _ = try on(from).call(["MIGRATE", to.host, "\(to.port)", key, "0", "5000"])
        let fromConn = try on(from)
        XCTAssertEqual(ClusterSlots.Redirect(error: serverError { () throws(RedisError) in try fromConn.call(["GET", key]) } ?? ""),
                       .ask(slot: slot, to: to), "the key left: the old master answers ASK")
        XCTAssertEqual(try call(client, ["GET", key]).get().string, "before", "ASK followed with ASKING")
        for n in [to, from] + map.masters.filter({ $0 != to && $0 != from }) {
            _ = try on(n).call(["CLUSTER", "SETSLOT", "\(slot)", "NODE", toID])
        }
        XCTAssertEqual(ClusterSlots.Redirect(error: serverError { () throws(RedisError) in try fromConn.call(["GET", key]) } ?? ""),
                       .moved(slot: slot, to: to))
        XCTAssertEqual(try call(client, ["GET", key]).get().string, "before", "MOVED followed")
        XCTAssertEqual(try call(client, ["SET", key, "after"]).get(), .status("OK"))
        XCTAssertEqual(try on(to).call(["GET", key]).string, "after", "written where the slot lives now")
        try waitUntil(3) { c.value.master(forKey: key) == to }
        var followed = false
        let moveDeadline = Date().addingTimeInterval(5)
        while !followed && Date() < moveDeadline {
            followed = (try publish(key, "after-move")) == 1
            if !followed { usleep(50_000) }
        }
        XCTAssertTrue(followed, "the channel followed its slot to the new master")
        try waitUntil { got.withLock { $0[key]?.last } == "after-move" }

        // A master killed: its slots' commands fail fast, the others go on; once its replica is
        // promoted the same client and subscriber work again, without a restart.
        let victim = try XCTUnwrap(map.master(forKey: "k:0"))
        let channel = try XCTUnwrap(channels.first { map.master(forKey: $0) == victim })
        let other = try XCTUnwrap((0..<200).map { "k:\($0)" }.first { map.master(forKey: $0) != victim })
        direct[victim]?.close()
        direct[victim] = nil
        let pid = try XCTUnwrap(ClusterHarness.pid(cluster.dir, port: victim.port))
        XCTAssertEqual(kill(pid, SIGKILL), 0)
        let killedAt = Date()
        var failedFast = 0, slowest = 0.0, recoveredAfter: Double?
        while Date().timeIntervalSince(killedAt) < 20 {
            let t = Date()
            let r = call(client, ["GET", "k:0"], timeoutMs: 1000)
            slowest = max(slowest, Date().timeIntervalSince(t))
            if case .success(.bulk(let v)) = r, v == Array("v0".utf8) {
                recoveredAfter = Date().timeIntervalSince(killedAt)
                break
            }
            failedFast += 1
            XCTAssertEqual(try call(client, ["GET", other]).get().string.map { _ in true }, true, "other masters' slots still answer")
            usleep(50_000)
        }
        XCTAssertNotNil(recoveredAfter, "the replica took over and the client followed the new map")
        XCTAssertGreaterThan(failedFast, 0, "commands for the dead master failed while it was gone")
        XCTAssertLessThan(slowest, 1.5, "none hung past its deadline")
        XCTAssertNotEqual(try runOnLoop { c.value.master(forKey: "k:0") }, victim)
        var heard = false
        let deadline = Date().addingTimeInterval(10)
        while !heard && Date() < deadline {
            heard = (try publish(channel, "after-failover")) == 1
            if !heard { usleep(100_000) }
        }
        XCTAssertTrue(heard, "the subscriber moved its channel to the new master")
        try waitUntil { got.withLock { $0[channel]?.last } == "after-failover" }
        print("failover: first success \(String(format: "%.2f", recoveredAfter ?? -1)) s after SIGKILL; \(failedFast) fast failures; slowest call \(String(format: "%.3f", slowest)) s")
        let cl = UncheckedBox(claims)
        loop.execute { sub.value.close(); c.value.close(); cl.value.close() }
    }

    func serverError(_ body: () throws(RedisError) -> RedisReply) -> String? {
        do { _ = try body(); return nil } catch {
            if case .server(let e) = error { return e }
            return "\(error)"
        }
    }

    func testClusterURLs() {
        let e = RedisEndpoint(url: "redis-cluster://:pw@10.0.0.1:7000,10.0.0.2:7001,redis-2")
        XCTAssertEqual(e?.seeds, [.init(host: "10.0.0.1", port: 7000), .init(host: "10.0.0.2", port: 7001), .init(host: "redis-2", port: 6379)])
        XCTAssertEqual(e?.password, "pw")
        XCTAssertEqual(e?.masked, "redis-cluster://:***@10.0.0.1:7000,10.0.0.2:7001,redis-2:6379")
        for bad in ["redis-cluster://", "redis-cluster://h:0", "redis-cluster://h:1,", "redis-cluster://h:1/2", "redis://a:1,b:2", "rediss://h"] {
            XCTAssertNil(RedisEndpoint(url: bad), bad)
        }
        XCTAssertEqual(RedisEndpoint(url: "redis-cluster://h:7000/0")?.seeds.count, 1)
        XCTAssertFalse(RedisEndpoint(url: "redis://h:1/3")!.isCluster)
        XCTAssertEqual(ClusterSlots.routingKey(["EVALSHA", "abc", "2", "{u:a}:x", "{u:a}:y", "arg"]), "{u:a}:x")
        XCTAssertNil(ClusterSlots.routingKey(["EVAL", "return 1", "0"]))
        XCTAssertEqual(ClusterSlots.routingKey(["XREADGROUP", "GROUP", "g", "c", "COUNT", "1", "BLOCK", "5", "STREAMS", "{jobs:m:1}:stream", ">"]), "{jobs:m:1}:stream")
        XCTAssertEqual(ClusterSlots.routingKey(["XGROUP", "CREATE", "s", "g", "0"]), "s")
        XCTAssertEqual(ClusterSlots.routingKey(["SPUBLISH", "ch", "m"]), "ch")
        XCTAssertNil(ClusterSlots.routingKey(["SCAN", "0"]))
        XCTAssertEqual(ClusterSlots.routingKey(["get", "k"]), "k")
    }
}
