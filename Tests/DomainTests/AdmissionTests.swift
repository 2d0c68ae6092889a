import Domain
import XCTest

/// The admission rules (the same the Lua scripts keep in Redis), on an injected clock.
final class AdmissionLedgerTests: XCTestCase {
    let s: UInt64 = 1_000_000_000

    func testSlidingWindowIsExactAndRefusalsAreNotRecorded() {
        var l = AdmissionLedger()
        let q = Quota(requestsPerMinute: 3, concurrency: 100)
        for (i, t) in [0, 10, 20].enumerated() {
            guard case .admitted(let g) = l.admit(user: "u", requestID: "r\(i)", quota: q, now: UInt64(t) * s) else { return XCTFail() }
            XCTAssertEqual(g.remaining, 2 - i)
        }
        // Knocking every second until the oldest leaves: refused, and never counted.
        for t in 21..<60 {
            guard case .refused(.rateLimited(3, let ms)) = l.admit(user: "u", requestID: "x\(t)", quota: q, now: UInt64(t) * s) else {
                return XCTFail("t=\(t)")
            }
            XCTAssertEqual(ms, (60 - t) * 1000, "retry exactly when the oldest leaves")
        }
        guard case .admitted = l.admit(user: "u", requestID: "y", quota: q, now: 60 * s) else { return XCTFail("the oldest left at 60 s") }
        guard case .refused = l.admit(user: "u", requestID: "z", quota: q, now: 60 * s + 1) else { return XCTFail() }
        guard case .admitted = l.admit(user: "u", requestID: "z", quota: q, now: 70 * s) else { return XCTFail("r1 left at 70 s") }
        // Another user is not affected.
        guard case .admitted = l.admit(user: "v", requestID: "r0", quota: q, now: 70 * s) else { return XCTFail() }
    }

    func testConcurrencyIsCheckedFirstAndUsesNoQuota() {
        var l = AdmissionLedger()
        let q = Quota(requestsPerMinute: 5, concurrency: 2)
        guard case .admitted = l.admit(user: "u", requestID: "a", quota: q, now: 0),
              case .admitted = l.admit(user: "u", requestID: "b", quota: q, now: 0) else { return XCTFail() }
        for i in 0..<10 {
            guard case .refused(.tooManyConcurrent(2, _)) = l.admit(user: "u", requestID: "c\(i)", quota: q, now: s) else { return XCTFail() }
        }
        l.release(user: "u", requestID: "a")
        l.release(user: "u", requestID: "a")  // idempotent
        guard case .admitted(let g) = l.admit(user: "u", requestID: "c", quota: q, now: 2 * s) else { return XCTFail() }
        XCTAssertEqual(g.remaining, 2, "the ten refusals used no quota")
    }

    func testIdempotentRequestIDGetsTheSameGrantAndIsNotCountedTwice() {
        var l = AdmissionLedger()
        let q = Quota(requestsPerMinute: 2, concurrency: 1)
        guard case .admitted(let first) = l.admit(user: "u", requestID: "same", quota: q, now: 0) else { return XCTFail() }
        XCTAssertEqual(l.admit(user: "u", requestID: "same", quota: q, now: s), .running(fence: first.fence),
                       "not refused for concurrency, and owns nothing")
        l.release(user: "u", requestID: "same")
        guard case .admitted(let second) = l.admit(user: "u", requestID: "other", quota: q, now: 2 * s) else { return XCTFail() }
        XCTAssertEqual(second.remaining, 0)
        XCTAssertGreaterThan(second.fence, first.fence, "fences only grow")
    }

    func testLeasesExpireRenewNeverResurrects() {
        var l = AdmissionLedger(leaseTTLNanos: 30 * s)
        let q = Quota(requestsPerMinute: 100, concurrency: 1)
        guard case .admitted = l.admit(user: "u", requestID: "a", quota: q, now: 0) else { return XCTFail() }
        XCTAssertTrue(l.renew(user: "u", requestID: "a", now: 20 * s))
        guard case .refused = l.admit(user: "u", requestID: "b", quota: q, now: 45 * s) else { return XCTFail("renewed until 50 s") }
        // A holder that died (no renewals) frees itself within the TTL.
        guard case .admitted = l.admit(user: "u", requestID: "b", quota: q, now: 50 * s) else { return XCTFail() }
        XCTAssertFalse(l.renew(user: "u", requestID: "a", now: 51 * s), "an expired lease is not brought back")
        XCTAssertEqual(l.leasesHeld(user: "u", now: 51 * s), 1)
        l.sweep(now: 200 * s)
        XCTAssertEqual(l.trackedUsers, 0, "idle users are forgotten")
    }

    /// Issue 15 item 2: an id that ran is never run again in the window, whatever was dropped
    /// meanwhile (released, or its lease expired), and never gets a grant without a lease.
    func testAnEndedRequestIDIsNeverAdmittedAgainInItsWindow() {
        var l = AdmissionLedger(leaseTTLNanos: 30 * s)
        let q = Quota(requestsPerMinute: 10, concurrency: 2)
        guard case .admitted(let g) = l.admit(user: "u", requestID: "x", quota: q, now: 0) else { return XCTFail() }
        l.release(user: "u", requestID: "x")
        XCTAssertEqual(l.admit(user: "u", requestID: "x", quota: q, now: s), .ended(fence: g.fence))
        XCTAssertEqual(l.leasesHeld(user: "u", now: s), 0, "no lease was taken for it")
        // A lease that expired (its holder died) ends it just the same.
        guard case .admitted(let h) = l.admit(user: "u", requestID: "y", quota: q, now: 2 * s) else { return XCTFail() }
        XCTAssertEqual(l.admit(user: "u", requestID: "y", quota: q, now: 40 * s), .ended(fence: h.fence))
        // Once it left the window, the id is a new request (counted as one).
        guard case .admitted(let again) = l.admit(user: "u", requestID: "x", quota: q, now: 61 * s) else { return XCTFail() }
        XCTAssertGreaterThan(again.fence, h.fence)
    }

    /// Issue 15 item 10: a request refused as busy after admission is taken back: no quota, no
    /// lease, and the same id is admitted afresh at once; only that admission's fence counts.
    func testUnadmitTakesBackQuotaLeaseAndRecord() {
        var l = AdmissionLedger()
        let q = Quota(requestsPerMinute: 2, concurrency: 1)
        guard case .admitted(let g) = l.admit(user: "u", requestID: "busy", quota: q, now: 0) else { return XCTFail() }
        l.unadmit(user: "u", requestID: "busy", fence: g.fence + 1)
        XCTAssertEqual(l.leasesHeld(user: "u", now: 1), 1, "another fence is not taken back")
        l.unadmit(user: "u", requestID: "busy", fence: g.fence)
        XCTAssertEqual(l.leasesHeld(user: "u", now: 1), 0)
        guard case .admitted(let retry) = l.admit(user: "u", requestID: "busy", quota: q, now: s) else { return XCTFail("retryable at once") }
        XCTAssertEqual(retry.remaining, 1, "the refused attempt used no quota")
        XCTAssertGreaterThan(retry.fence, g.fence)
        l.release(user: "u", requestID: "busy")
        guard case .admitted(let other) = l.admit(user: "u", requestID: "other", quota: q, now: 2 * s) else { return XCTFail() }
        XCTAssertEqual(other.remaining, 0)
        l.release(user: "u", requestID: "other")
        guard case .refused(.rateLimited) = l.admit(user: "u", requestID: "third", quota: q, now: 3 * s) else { return XCTFail() }
    }
}
