import Domain
import Foundation
import NetCore
import RedisCoordination
import Runtime
import Synchronization
import XCTest

/// The fleet's queue split into K job streams on one real Redis: jobs spread over the shards by
/// their stream key, the backlog bound is fleet-wide, a claim never returns more than asked and
/// reaches every shard, acks, reclaims and dead letters find their shard, locators share it.
class LiveShardedJobQueueTests: RedisTestCase {
    let helper = LiveJobQueueTests.self

    func queue(_ conn: RedisClient, shards: Int, maxBacklog: Int) throws -> (RedisJobQueue, FleetKeys) {
        let keys = FleetKeys(fleet: "sharded-\(UInt32.random(in: 0...UInt32.max))", shards: shards)
        let q = try RedisJobQueue(connection: conn, claims: conn, scriptsDirectory: LiveAdmissionScriptTests.luaDir, maxBacklog: maxBacklog, keys: keys)
        XCTAssertTrue(helper.wait { done in q.prepare { done($0) } })
        return (q, keys)
    }

    func testKeysOfOneShardAndOfBeforeSharding() {
        let one = FleetKeys(fleet: "main")
        XCTAssertEqual([one.stream(0), one.dead(0), one.locator("k"), one.transcript("k")],
                       ["{jobs:main}:stream", "{jobs:main}:dead", "{jobs:main}:req:k", "{jobs:main}:done:k"], "one shard: the keys of before")
        let four = FleetKeys(fleet: "main", shards: 4)
        XCTAssertEqual(four.stream(2), "{jobs:main:2}:stream")
        XCTAssertEqual(four.dead(3), "{jobs:main:3}:dead")
        var seen = Set<Int>()
        for i in 0..<200 {
            let key = "u\(i)/r\(i)"
            let s = four.shard(of: key)
            XCTAssertTrue((0..<4).contains(s))
            XCTAssertEqual(four.shard(of: key), s, "stable")
            seen.insert(s)
            // The enqueue script's keys share a slot: the shard's stream and the request's locator.
            XCTAssertEqual(ClusterSlots.slot(four.stream(s)), ClusterSlots.slot(four.locator(key)))
            XCTAssertEqual(ClusterSlots.slot(four.locator(key)), ClusterSlots.slot(four.transcript(key)))
        }
        XCTAssertEqual(seen.count, 4, "keys spread over every shard")
    }

    func testJobsSpreadClaimsStayWithinWhatIsAskedAndAcksFindTheirShard() throws {
        let conn = try connect()
        let (q, keys) = try queue(conn, shards: 4, maxBacklog: 1000)
        for i in 0..<40 {
            let r = helper.wait { done in q.enqueue(LiveJobQueueTests.job("job-\(i)"), streamKey: "u/r-\(i)", holder: "gw-test") { done($0) } }
            guard case .success(.queued(let id)) = r else { return XCTFail("\(r)") }
            XCTAssertTrue(id.hasPrefix("\(keys.shard(of: "u/r-\(i)"))/"), id)
        }
        let perShard = (0..<4).map { (try? call(conn, ["XLEN", keys.stream($0)]).get().integer) ?? -1 }
        XCTAssertEqual(perShard.reduce(0, +), 40)
        XCTAssertTrue(perShard.allSatisfy { $0 > 0 }, "\(perShard)")
        XCTAssertEqual(helper.wait { done in q.backlog { done($0) } }, 40)
        // The same stream key again: a duplicate, found in its shard.
        let dup = helper.wait { done in q.enqueue(LiveJobQueueTests.job("again"), streamKey: "u/r-7", holder: "gw-other") { done($0) } }
        XCTAssertEqual(dup, .success(.duplicate(holder: "gw-test")))
        var claimed: [QueuedJob] = []
        for max in [1, 2, 3, 5, 7, 40] {
            let got = try helper.wait { done in q.claim(consumer: "w1", max: max, blockMs: 0) { done($0) } }.get()
            XCTAssertLessThanOrEqual(got.count, max, "never more than asked")
            claimed += got
        }
        while claimed.count < 40 {
            let got = try helper.wait { done in q.claim(consumer: "w1", max: 8, blockMs: 0) { done($0) } }.get()
            XCTAssertFalse(got.isEmpty, "every shard is reached: \(claimed.count) of 40")
            if got.isEmpty { break }
            claimed += got
        }
        XCTAssertEqual(Set(claimed.compactMap { $0.job?.request.requestID }), Set((0..<40).map { "job-\($0)" }), "each job once")
        for j in claimed { q.ack(j.id) }
        usleep(100_000)
        XCTAssertEqual(helper.wait { done in q.backlog { done($0) } }, 0, "acks found their shards")
        // A locator and a transcript in the request's shard.
        q.keepFinished(streamKey: "u/r-3", transcript: Array("done".utf8), ttlMs: 60_000)
        usleep(50_000)
        let found = try helper.wait { done in q.lookup(streamKey: "u/r-3") { done($0) } }.get()
        XCTAssertEqual(found.holder, "gw-test")
        XCTAssertEqual(found.transcript, Array("done".utf8))
    }

    func testTheBacklogBoundIsFleetWide() throws {
        let conn = try connect()
        let (q, _) = try queue(conn, shards: 4, maxBacklog: 8)
        var queued = 0, busy = 0
        for i in 0..<60 {
            switch helper.wait({ done in q.enqueue(LiveJobQueueTests.job("j\(i)"), streamKey: "u/b-\(i)", holder: "gw") { done($0) } }) {
            case .success: queued += 1
            case .failure(.busy(let n)): busy += 1; XCTAssertEqual(n, 8)
            case .failure(let e): XCTFail("\(e)")
            }
        }
        XCTAssertEqual(queued, 8, "2 per shard, 8 in all")
        XCTAssertEqual(busy, 52)
    }

    func testReclaimAndDeadLettersPerShard() throws {
        let conn = try connect()
        let (q, keys) = try queue(conn, shards: 3, maxBacklog: 100)
        for i in 0..<9 {
            _ = helper.wait { done in q.enqueue(LiveJobQueueTests.job("r\(i)"), streamKey: "u/rc-\(i)", holder: "gw") { done($0) } }
        }
        // (COUNT is per stream — 9 over 3 shards is 3 from each — so an uneven spread takes two reads.)
        var first: [QueuedJob] = []
        for _ in 0..<5 where first.count < 9 {
            let got = try helper.wait { done in q.claim(consumer: "dead-worker", max: 9 - first.count, blockMs: 0) { done($0) } }.get()
            XCTAssertLessThanOrEqual(got.count, 9 - first.count)
            first += got
        }
        XCTAssertEqual(first.count, 9)
        usleep(20_000)
        let taken = try helper.wait { done in q.reclaim(consumer: "w2", minIdleMs: 1, max: 4, maxDeliveries: 3) { done($0) } }.get()
        XCTAssertEqual(taken.claimed.count, 4, "no more than asked, across shards")
        XCTAssertTrue(taken.dead.isEmpty)
        var all = taken.claimed
        while all.count < 9 {
            usleep(20_000)
            let more = try helper.wait { done in q.reclaim(consumer: "w2", minIdleMs: 1, max: 9, maxDeliveries: 3) { done($0) } }.get()
            XCTAssertFalse(more.claimed.isEmpty)
            if more.claimed.isEmpty { break }
            all += more.claimed
        }
        XCTAssertEqual(Set(all.map(\.id)).count, 9)
        XCTAssertTrue(all.allSatisfy { $0.deliveries >= 2 }, "each delivered again")
        // Delivered a third time: dead-lettered, each in its own shard's dead letters.
        usleep(20_000)
        let last = try helper.wait { done in q.reclaim(consumer: "w3", minIdleMs: 1, max: 9, maxDeliveries: 2) { done($0) } }.get()
        XCTAssertEqual(last.dead.count, 9)
        let deadPerShard = (0..<3).map { (try? call(conn, ["XLEN", keys.dead($0)]).get().integer) ?? -1 }
        XCTAssertEqual(deadPerShard.reduce(0, +), 9)
        XCTAssertEqual(helper.wait { done in q.backlog { done($0) } }, 0)
    }
}
