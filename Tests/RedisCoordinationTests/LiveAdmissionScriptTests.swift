import Domain
import Foundation
import NetCore
import RedisCoordination
import Runtime
import Synchronization
import XCTest

/// lua/admit.lua, renew.lua and release.lua against a real Redis, on a short window and TTL so
/// the edges can be watched in real time.
class LiveAdmissionScriptTests: RedisTestCase {
    static let luaDir = URL(fileURLWithPath: #filePath).deletingLastPathComponent().deletingLastPathComponent()
        .deletingLastPathComponent().appendingPathComponent("lua").path

    func admission(_ conn: RedisClient, rpm: Int, concurrency: Int, windowMs: Int = 1000, ttlMs: UInt64 = 30_000,
                   fallback: Admission? = nil) throws -> RedisAdmission {
        try RedisAdmission(connection: conn, scriptsDirectory: Self.luaDir, defaults: Quota(requestsPerMinute: rpm, concurrency: concurrency),
                           leaseTTLNanos: ttlMs * 1_000_000, windowMs: windowMs, timeoutNanos: 500_000_000, fallback: fallback)
    }

    func admit(_ a: Admission, _ user: String, _ id: String) -> AdmissionOutcome {
        let result = Mutex<AdmissionOutcome?>(nil)
        let done = DispatchSemaphore(value: 0)
        a.admit(user: user, requestID: id) { o in result.withLock { $0 = o }; done.signal() }
        done.wait()
        return result.withLock { $0! }
    }

    func user() -> String { "t-" + UUID().uuidString.prefix(8) }

    func testWindowEdgeIsExact() throws {
        let conn = try connect()
        let a = try admission(conn, rpm: 3, concurrency: 100, windowMs: 1000)
        let u = user()
        for i in 0..<3 { guard case .admitted = admit(a, u, "r\(i)") else { return XCTFail() } }
        guard case .refused(.rateLimited(3, let ms)) = admit(a, u, "x") else { return XCTFail() }
        XCTAssertTrue((900...1000).contains(ms), "\(ms)")
        usleep(UInt32(max(0, ms - 150)) * 1000)
        guard case .refused = admit(a, u, "y") else { return XCTFail("still inside the window") }
        usleep(250_000)
        guard case .admitted(let g) = admit(a, u, "z") else { return XCTFail("admitted once the oldest left") }
        XCTAssertEqual(g.remaining, 2, "all three, admitted together, left together")
    }

    func testConcurrencyFirstIdempotencyRenewRelease() throws {
        let conn = try connect()
        let a = try admission(conn, rpm: 5, concurrency: 2, windowMs: 60_000, ttlMs: 300)
        let u = user()
        guard case .admitted(let ga) = admit(a, u, "a"), case .admitted = admit(a, u, "b") else { return XCTFail() }
        for i in 0..<10 {
            guard case .refused(.tooManyConcurrent(2, _)) = admit(a, u, "c\(i)") else { return XCTFail() }
        }
        XCTAssertEqual(admit(a, u, "a"), .running(fence: ga.fence), "a running request id: attach, owning nothing")
        a.release(user: u, requestID: "a")
        a.release(user: u, requestID: "a")
        usleep(50_000)
        guard case .admitted(let gc) = admit(a, u, "c") else { return XCTFail() }
        XCTAssertEqual(gc.remaining, 2, "refusals used no quota; the repeat was not counted")
        XCTAssertGreaterThan(gc.fence, ga.fence)
        // Renew keeps b alive past its TTL; c, not renewed, expires and frees its place.
        for _ in 0..<4 { a.renew(user: u, requestID: "b"); usleep(100_000) }
        XCTAssertNotEqual(try call(conn, ["ZSCORE", AdmissionKeys.leases(u), "b"]).get(), .null)

        a.renew(user: u, requestID: "c")  // never resurrected
        usleep(50_000)
        guard case .admitted = admit(a, u, "d") else { return XCTFail("c's expired lease freed its place") }
        XCTAssertEqual(try call(conn, ["ZSCORE", AdmissionKeys.leases(u), "c"]).get(), .null)
        // Every key of the user expires once idle.
        for key in [AdmissionKeys.window(u), AdmissionKeys.leases(u), AdmissionKeys.admitted(u)] {
            let ttl = try call(conn, ["PTTL", key]).get().integer ?? -1
            XCTAssertGreaterThan(ttl, 0, key)
        }
    }

    /// admit.lua keeps the ledger's rule: an id whose lease is gone has ended and is never run
    /// again in its window (issue 15 item 2); unadmit.lua takes a busy refusal back (item 10).
    func testEndedIDsAreNotReadmittedAndUnadmitRefunds() throws {
        let conn = try connect()
        let a = try admission(conn, rpm: 2, concurrency: 2, windowMs: 60_000, ttlMs: 300)
        let u = user()
        guard case .admitted(let gx) = admit(a, u, "x") else { return XCTFail() }
        a.release(user: u, requestID: "x")
        usleep(30_000)
        XCTAssertEqual(admit(a, u, "x"), .ended(fence: gx.fence))
        XCTAssertEqual(try call(conn, ["ZSCORE", AdmissionKeys.leases(u), "x"]).get(), .null, "no lease for an ended id")
        guard case .admitted(let gy) = admit(a, u, "y") else { return XCTFail() }
        usleep(400_000)  // y's lease expires: its holder died
        XCTAssertEqual(admit(a, u, "y"), .ended(fence: gy.fence))
        // The window is full (x, y): a busy refusal of z... first free a place by taking y back.
        a.unadmit(user: u, requestID: "y", fence: gy.fence + 7)  // not its fence: nothing happens
        usleep(30_000)
        guard case .refused(.rateLimited(2, _)) = admit(a, u, "z") else { return XCTFail("a wrong fence takes nothing back") }
        a.unadmit(user: u, requestID: "y", fence: gy.fence)
        usleep(30_000)
        XCTAssertEqual(try call(conn, ["HEXISTS", AdmissionKeys.admitted(u), "y"]).get(), .integer(0))
        guard case .admitted(let gz) = admit(a, u, "z") else { return XCTFail("y's place in the window came back") }
        XCTAssertEqual(gz.remaining, 0)
        guard case .refused = admit(a, u, "y") else { return XCTFail("y is a new request now, and the window is full") }
    }

    func testQuotaOverrideAndScriptFlush() throws {
        let conn = try connect()
        let a = try admission(conn, rpm: 100, concurrency: 100, windowMs: 60_000)
        let u = user()
        _ = call(conn, ["HSET", AdmissionKeys.quota(u), "rpm", "1"])
        guard case .admitted = admit(a, u, "one") else { return XCTFail() }
        guard case .refused(.rateLimited(1, _)) = admit(a, u, "two") else { return XCTFail("the override applies on the next request") }
        _ = call(conn, ["DEL", AdmissionKeys.quota(u)])
        XCTAssertEqual(try call(conn, ["SCRIPT", "FLUSH"]).get(), .status("OK"))
        guard case .admitted = admit(a, u, "two") else { return XCTFail("NOSCRIPT → EVAL, and the default applies again") }
    }

    func testRedisDownUsesTheFallbackOrRefusesAsBusy() throws {
        let dead = RedisClient(endpoint: RedisEndpoint(host: "127.0.0.1", port: 1), loop: loop, logger: logger)
        let box = UncheckedBox(dead)
        loop.execute { box.value.start() }
        let noFallback = try admission(dead, rpm: 5, concurrency: 1)
        guard case .unavailable = admit(noFallback, user(), "r") else { return XCTFail() }
        let local = LocalLedgerAdmission(Quota(requestsPerMinute: 1, concurrency: 1))
        let withFallback = try admission(dead, rpm: 5, concurrency: 1, fallback: local)
        let u = user()
        guard case .admitted = admit(withFallback, u, "r1") else { return XCTFail() }
        guard case .refused = admit(withFallback, u, "r2") else { return XCTFail("the fallback's own limits apply") }
        loop.execute { box.value.close() }
    }
}

/// A minimal in-memory Admission for the fallback test (the product's is Gateway.LocalAdmission).
final class LocalLedgerAdmission: Admission, @unchecked Sendable {
    let ledger = Mutex(AdmissionLedger())
    let quota: Quota
    let leaseTTLNanos: UInt64 = 30_000_000_000
    init(_ q: Quota) { quota = q }
    func admit(user: String, requestID: String, done: @escaping @Sendable (AdmissionOutcome) -> Void) {
        done(ledger.withLock { $0.admit(user: user, requestID: requestID, quota: quota, now: monotonicNanos()) })
    }
    func renew(user: String, requestID: String) {}
    func release(user: String, requestID: String) { ledger.withLock { $0.release(user: user, requestID: requestID) } }
    func unadmit(user: String, requestID: String, fence: Int64) {
        ledger.withLock { $0.unadmit(user: user, requestID: requestID, fence: fence) }
    }
}
