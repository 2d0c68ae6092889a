import Domain
import Gateway
import XCTest

/// The gateway's per-stream state machine: time comes in as `now`, so every deadline edge is
/// checked exactly, without sockets or sleeps.
final class StreamStateTests: XCTestCase {
    let ms: UInt64 = 1_000_000
    func state(renewEvery: UInt64 = 0) -> StreamState {
        StreamState(created: 1_000 * ms, limits: .init(queueWaitNanos: 30_000 * ms, silenceNanos: 2_000 * ms, renewEveryNanos: renewEvery))
    }

    func testAcceptedOnceWhenQueuedThenRunningWhenTheWorkerSpeaks() {
        var s = state()
        XCTAssertTrue(s.isQueued)
        XCTAssertTrue(s.enqueued(), "subscribers hear accepted now")
        XCTAssertFalse(s.enqueued(), "and only once")
        XCTAssertTrue(s.heard(now: 1_010 * ms), "the worker spoke: it left the queue")
        XCTAssertFalse(s.heard(now: 1_020 * ms))
        XCTAssertEqual(s.phase, .running)
        XCTAssertTrue(s.workerStarted(now: 1_010 * ms))
        XCTAssertFalse(s.workerStarted(now: 1_030 * ms), "the queue time is the first start")
    }

    func testQueueWaitEdgeIsExact() {
        var s = state()
        _ = s.enqueued()
        XCTAssertEqual(s.check(now: 31_000 * ms, watchesSilence: true, canFallBack: false), [], "exactly 30 s: still waiting")
        XCTAssertEqual(s.check(now: 31_000 * ms + 1, watchesSilence: true, canFallBack: false), [.queueWaitExpired])
        var unqueued = state()
        XCTAssertEqual(unqueued.check(now: 31_000 * ms + 1, watchesSilence: false, canFallBack: false), [.queueWaitExpired],
                       "a job never put on a queue times out the same way")
    }

    func testSilenceIsWatchedOnlyForWorkersInOtherProcesses() {
        var s = state()
        _ = s.enqueued()
        _ = s.heard(now: 2_000 * ms)
        XCTAssertEqual(s.check(now: 4_000 * ms, watchesSilence: true, canFallBack: false), [], "exactly 2 s of silence is allowed")
        XCTAssertEqual(s.check(now: 4_000 * ms + 1, watchesSilence: false, canFallBack: false), [], "a worker in this process")
        XCTAssertEqual(s.check(now: 4_000 * ms + 1, watchesSilence: true, canFallBack: false), [.workerSilent])
        _ = s.heard(now: 4_500 * ms)  // a keepalive
        XCTAssertEqual(s.check(now: 6_000 * ms, watchesSilence: true, canFallBack: false), [])
    }

    func testFallsBackOnlyWhileWaiting() {
        var s = state()
        XCTAssertEqual(s.check(now: 1_100 * ms, watchesSilence: true, canFallBack: true), [], "not on a queue yet")
        _ = s.enqueued()
        XCTAssertEqual(s.check(now: 1_100 * ms, watchesSilence: true, canFallBack: true), [.fallBack])
        _ = s.heard(now: 1_200 * ms)
        XCTAssertEqual(s.check(now: 1_300 * ms, watchesSilence: true, canFallBack: true), [], "running: it stays where it is")
    }

    func testLeaseRenewedEveryPeriodWhileItLivesAndNeverAfter() {
        var s = state(renewEvery: 10_000 * ms)
        _ = s.enqueued()
        _ = s.heard(now: 1_001 * ms)
        XCTAssertEqual(s.check(now: 10_999 * ms, watchesSilence: false, canFallBack: false), [])
        XCTAssertEqual(s.check(now: 11_000 * ms, watchesSilence: false, canFallBack: false), [.renewLease])
        XCTAssertEqual(s.check(now: 11_500 * ms, watchesSilence: false, canFallBack: false), [], "once per period")
        XCTAssertEqual(s.check(now: 21_000 * ms, watchesSilence: false, canFallBack: false), [.renewLease])
        XCTAssertTrue(s.finish())
        XCTAssertEqual(s.check(now: 99_000 * ms, watchesSilence: true, canFallBack: true), [], "an ended stream decides nothing")
        XCTAssertFalse(s.finish())
        var free = state(renewEvery: 0)
        XCTAssertEqual(free.check(now: 50_000 * ms, watchesSilence: false, canFallBack: false).filter { $0 == .renewLease }, [],
                       "no lease, no renewal")
    }

    func testDeltasInOrderDuplicatesIgnoredGapsCaught() {
        var s = state()
        _ = s.enqueued()
        XCTAssertEqual(s.delta(index: 0, now: 1_050 * ms), .append)
        XCTAssertEqual(s.delta(index: 1, now: 1_060 * ms), .append)
        XCTAssertEqual(s.delta(index: 1, now: 1_070 * ms), .duplicate, "a replay after a follow repeats what we have")
        XCTAssertEqual(s.delta(index: 3, now: 1_080 * ms), .gap, "index 2 was lost")
        XCTAssertEqual(s.tokens, 2)
        _ = s.finish()
        XCTAssertEqual(s.delta(index: 2, now: 1_090 * ms), .ignored)
    }

    func testTimingsAreTheClientsView() {
        var s = state()
        _ = s.enqueued()
        _ = s.workerStarted(now: 1_005 * ms)
        _ = s.delta(index: 0, now: 1_020 * ms)
        let t = s.timings(end: 1_100 * ms, upstream: "builtin")
        XCTAssertEqual(t, Timings(queueMs: 5, ttftMs: 20, totalMs: 100, upstream: "builtin"))
        let never = state().timings(end: 1_250 * ms, upstream: "fleet")
        XCTAssertEqual(never, Timings(queueMs: 250, ttftMs: nil, totalMs: 250, upstream: "fleet"), "never started: all of it was queue")
    }
}
