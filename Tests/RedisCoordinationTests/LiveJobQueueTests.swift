import Domain
import Foundation
import NetCore
import RedisCoordination
import Runtime
import Synchronization
import XCTest

/// The job queue on a real Redis Stream: bounded backlog, pull claims without duplicates, ack
/// deletes, a silent worker's jobs are reclaimed, and a job delivered too often is dead-lettered.
class LiveJobQueueTests: RedisTestCase {
    func queue(_ conn: RedisClient, maxBacklog: Int) throws -> RedisJobQueue {
        _ = call(conn, ["DEL", FleetKeys().stream(0), FleetKeys().dead(0)])
        let q = try RedisJobQueue(connection: conn, claims: conn, scriptsDirectory: LiveAdmissionScriptTests.luaDir, maxBacklog: maxBacklog)
        let ok = wait { done in q.prepare { done($0) } }
        XCTAssertTrue(ok)
        return q
    }

    /// A job whose request_id is `id` (what the tests look for after a round trip).
    static func job(_ id: String) -> FleetJob {
        FleetJob(request: CompletionRequest(requestID: id, clientSuppliedID: false, prompt: "p", parameters: GenerationParameters(model: "builtin"),
                                            stream: true, flavor: .text),
                 ticket: .init(replyTo: "pg:gw:test", expiresAtMs: 1))
    }

    static func freshKey() -> String { StreamKey.make(owner: "u", requestID: "r-\(UInt64.random(in: 0...UInt64.max))") }

    func wait<T: Sendable>(_ body: (@escaping @Sendable (T) -> Void) -> Void) -> T { Self.wait(body) }

    /// Waits for a callback's value.
    static func wait<T: Sendable>(_ body: (@escaping @Sendable (T) -> Void) -> Void) -> T {
        let result = Mutex<T?>(nil)
        let sem = DispatchSemaphore(value: 0)
        body { v in result.withLock { $0 = v }; sem.signal() }
        sem.wait()
        return result.withLock { $0! }
    }

    func testBacklogIsBoundedAndClaimsDoNotOverlap() throws {
        let conn = try connect()
        let q = try queue(conn, maxBacklog: 5)
        for i in 0..<5 {
            let r = wait { done in q.enqueue(Self.job("job-\(i)"), streamKey: Self.freshKey(), holder: "gw-test") { done($0) } }
            XCTAssertNotNil(try? r.get())
        }
        let full = wait { done in q.enqueue(Self.job("job-5"), streamKey: Self.freshKey(), holder: "gw-test") { done($0) } }
        XCTAssertEqual(full, .failure(.busy(backlog: 5)))
        let a = try wait { done in q.claim(consumer: "w1", max: 3, blockMs: 0) { done($0) } }.get()
        let b = try wait { done in q.claim(consumer: "w2", max: 3, blockMs: 0) { done($0) } }.get()
        XCTAssertEqual(a.count, 3)
        XCTAssertEqual(b.count, 2)
        XCTAssertEqual(Set((a + b).compactMap { $0.job?.request.requestID }), Set((0..<5).map { "job-\($0)" }))
        XCTAssertTrue(try wait { done in q.claim(consumer: "w3", max: 3, blockMs: 0) { done($0) } }.get().isEmpty)
        // Acknowledged jobs leave the stream: the backlog has room again, exactly as much as was acked.
        for j in a { q.ack(j.id) }
        usleep(50_000)
        XCTAssertEqual(try call(conn, ["XLEN", FleetKeys().stream(0)]).get().integer, 2)
        for i in 0..<3 { XCTAssertNotNil(try? wait { done in q.enqueue(Self.job("more-\(i)"), streamKey: Self.freshKey(), holder: "gw-test") { done($0) } }.get()) }
        XCTAssertEqual(wait { done in q.enqueue(Self.job("over"), streamKey: Self.freshKey(), holder: "gw-test") { done($0) } }, .failure(.busy(backlog: 5)))
    }

    func testSilentWorkersJobsAreReclaimedThenDeadLettered() throws {
        let conn = try connect()
        let q = try queue(conn, maxBacklog: 100)
        _ = wait { done in q.enqueue(Self.job("poison"), streamKey: Self.freshKey(), holder: "gw-test") { done($0) } }
        let first = try wait { done in q.claim(consumer: "dies-1", max: 1, blockMs: 0) { done($0) } }.get()
        XCTAssertEqual(first.count, 1)
        // Not idle long enough yet: nothing moves.
        let early = try wait { done in q.reclaim(consumer: "w", minIdleMs: 200, max: 10, maxDeliveries: 3) { done($0) } }.get()
        XCTAssertTrue(early.claimed.isEmpty && early.dead.isEmpty)
        usleep(250_000)
        let second = try wait { done in q.reclaim(consumer: "dies-2", minIdleMs: 200, max: 10, maxDeliveries: 3) { done($0) } }.get()
        XCTAssertEqual(second.claimed.map(\.id), first.map(\.id))
        XCTAssertEqual(second.claimed.first?.deliveries, 2)
        XCTAssertEqual(second.claimed.first?.job?.request.requestID, "poison")
        usleep(250_000)
        let third = try wait { done in q.reclaim(consumer: "dies-3", minIdleMs: 200, max: 10, maxDeliveries: 3) { done($0) } }.get()
        XCTAssertEqual(third.claimed.first?.deliveries, 3)
        usleep(250_000)
        let last = try wait { done in q.reclaim(consumer: "w", minIdleMs: 200, max: 10, maxDeliveries: 3) { done($0) } }.get()
        XCTAssertTrue(last.claimed.isEmpty)
        XCTAssertEqual(last.dead.map(\.id), first.map(\.id), "delivered 3 times: dead-lettered")
        XCTAssertEqual(last.dead.first?.job?.request.requestID, "poison", "with its job, so its client can be told")
        XCTAssertEqual(try call(conn, ["XLEN", FleetKeys().stream(0)]).get().integer, 0)
        XCTAssertEqual(try call(conn, ["XLEN", FleetKeys().dead(0)]).get().integer, 1)
    }

    func testBlockingClaimWaitsForAJob() throws {
        let conn = try connect()
        let reader = try connect()
        _ = call(conn, ["DEL", FleetKeys().stream(0)])
        let q = try RedisJobQueue(connection: conn, claims: reader, scriptsDirectory: LiveAdmissionScriptTests.luaDir, maxBacklog: 10)
        XCTAssertTrue(wait { done in q.prepare { done($0) } })
        let got = Mutex<[QueuedJob]?>(nil)
        q.claim(consumer: "w", max: 1, blockMs: 2000) { r in got.withLock { $0 = try? r.get() } }
        usleep(100_000)
        XCTAssertNil(got.withLock { $0 }, "still waiting")
        let start = Date()
        _ = wait { done in q.enqueue(Self.job("late"), streamKey: Self.freshKey(), holder: "gw-test") { done($0) } }
        while got.withLock({ $0 }) == nil && Date().timeIntervalSince(start) < 2 { usleep(1000) }
        XCTAssertEqual(got.withLock { $0 }?.first?.job?.request.requestID, "late")
        XCTAssertLessThan(Date().timeIntervalSince(start), 0.5, "woken by the job, not the timeout")
        // And the other connection stayed usable meanwhile (the blocked read is on its own).
        XCTAssertEqual(try call(conn, ["PING"]).get(), .status("PONG"))
    }

    /// An entry no worker can read comes out as a job-less entry (the worker drops it), not as
    /// an error that stops the claim.
    func testAnUnreadableEntryIsClaimedWithoutAJob() throws {
        let conn = try connect()
        let q = try queue(conn, maxBacklog: 10)
        XCTAssertFalse(try call(conn, ["XADD", FleetKeys().stream(0), "*", "job", "not json"]).get().isError)
        _ = wait { done in q.enqueue(Self.job("fine"), streamKey: Self.freshKey(), holder: "gw-test") { done($0) } }
        let got = try wait { done in q.claim(consumer: "w", max: 5, blockMs: 0) { done($0) } }.get()
        XCTAssertEqual(got.count, 2)
        XCTAssertNil(got[0].job)
        XCTAssertEqual(got[1].job?.request.requestID, "fine")
    }

    func testArgumentsAreBinarySafe() throws {
        let conn = try connect()
        _ = call(conn, ["SET", "t:bin", "a\u{0}b"])
        XCTAssertEqual(try call(conn, ["GET", "t:bin"]).get(), .bulk([97, 0, 98]))
    }

    func testTheLocatorFindsTheHolderAndRefusesASecondStreamForOneRequest() throws {
        let conn = try connect()
        let q = try queue(conn, maxBacklog: 100)
        let key = Self.freshKey()
        let first = wait { done in q.enqueue(Self.job("a"), streamKey: key, holder: "gw-1") { done($0) } }
        guard case .success(.queued) = first else { return XCTFail("\(first)") }
        // The same request_id again (another gateway, a retry): not queued twice, attach to gw-1.
        XCTAssertEqual(wait { done in q.enqueue(Self.job("b"), streamKey: key, holder: "gw-2") { done($0) } }, .success(.duplicate(holder: "gw-1")))
        XCTAssertEqual(try call(conn, ["XLEN", FleetKeys().stream(0)]).get().integer, 1)
        XCTAssertEqual(wait { done in q.backlog { done($0) } }, 1)
        let found = try wait { done in q.lookup(streamKey: key) { done($0) } }.get()
        XCTAssertEqual(found.holder, "gw-1")
        XCTAssertNil(found.transcript)
        q.keepFinished(streamKey: key, transcript: Array("line1\nline2".utf8), ttlMs: 5000)
        let after = try wait { done in q.lookup(streamKey: key) { done($0) } }.get()
        XCTAssertEqual(after.transcript, Array("line1\nline2".utf8))
        let ttl = try call(conn, ["PTTL", FleetKeys().transcript(key)]).get().integer ?? -1
        XCTAssertTrue((1...5000).contains(ttl), "transcripts expire: \(ttl)")
        let nothing = try wait { done in q.lookup(streamKey: Self.freshKey()) { done($0) } }.get()
        XCTAssertNil(nothing.holder)
        // Forget drops a locator only for the gateway it names.
        q.forget(streamKey: key, holder: "gw-2")
        usleep(50_000)
        XCTAssertEqual(try wait { done in q.lookup(streamKey: key) { done($0) } }.get().holder, "gw-1", "another gateway's locator stays")
        q.forget(streamKey: key, holder: "gw-1")
        usleep(50_000)
        XCTAssertNil(try wait { done in q.lookup(streamKey: key) { done($0) } }.get().holder)
    }
}
