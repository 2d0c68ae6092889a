import Domain
import Gateway
import ModelProxy
import NetCore
import Runtime
import Synchronization
import XCTest

/// Records events on the loop.
final class Recorder: CompletionSubscriber, @unchecked Sendable {
    let loop: EventLoop
    let events = Mutex<[String]>([])
    init(_ loop: EventLoop) { self.loop = loop }
    func receive(_ event: CompletionEvent) {
        let s: String
        switch event {
        case .accepted: s = "accepted"
        case .delta: s = "delta"
        case .done(let r, _, _): s = "done:\(r.rawValue)"
        case .failed(let e, _): s = "error:\(e.code.rawValue)"
        }
        events.withLock { $0.append(s) }
    }
    var last: String? { events.withLock { $0.last } }
    var finished: Bool { last.map { $0.hasPrefix("done") || $0.hasPrefix("error") } ?? false }
}

final class SchedulerTests: XCTestCase {
    static let model = NGramModel()
    var group: EventLoopGroup!

    override func setUp() {
        group = try! EventLoopGroup(count: 2)
        group.start()
    }
    override func tearDown() { group.shutdown() }

    func scheduler(slots: Int, queue: Int, tokenMs: Double = 20) -> CompletionScheduler {
        var c = SchedulerConfiguration()
        c.slots = slots
        c.maxQueue = queue
        return CompletionScheduler(configuration: c, model: Self.model, pace: ModelPace(ttftMs: tokenMs, tokenMs: tokenMs, jitter: 0),
                                   metrics: Metrics(), logger: Logger(label: "t", level: .error))
    }

    func request(_ id: String, maxTokens: Int = 30, supplied: Bool = true) -> CompletionRequest {
        CompletionRequest(requestID: id, clientSuppliedID: supplied, prompt: "The sea",
                          parameters: GenerationParameters(model: "builtin", temperature: 0.9, maxTokens: maxTokens, seed: 1),
                          stream: true, flavor: .text)
    }

    func submit(_ s: CompletionScheduler, _ r: CompletionRequest, on loop: EventLoop) async throws -> (Recorder, Bool) {
        let rec = Recorder(loop)
        let box = UncheckedBox((s, r, rec))
        let ok = try await loop.submit { () -> Bool in
            if case .success = box.value.0.submit(box.value.1, subscriber: box.value.2) { return true }
            return false
        }
        return (rec, ok)
    }

    func waitUntil(_ cond: () -> Bool, timeout: Double = 5) async {
        let end = monotonicNanos() + UInt64(timeout * 1e9)
        while !cond() && monotonicNanos() < end { try? await Task.sleep(nanoseconds: 5_000_000) }
    }

    func testQueueIsFIFOAndBoundedAndBusyIsImmediate() async throws {
        let s = scheduler(slots: 1, queue: 2)
        let loop = group.loops[0]
        let (a, okA) = try await submit(s, request("a"), on: loop)
        let (b, okB) = try await submit(s, request("b"), on: loop)
        let (c, okC) = try await submit(s, request("c"), on: loop)
        let (_, okD) = try await submit(s, request("d"), on: loop)
        XCTAssertTrue(okA && okB && okC)
        XCTAssertFalse(okD, "queue full → busy at once")
        XCTAssertEqual(s.metrics.completionsBusy.load(ordering: .relaxed), 1)
        XCTAssertEqual(s.inFlight, 3)
        await waitUntil { c.finished }
        XCTAssertTrue(a.finished && b.finished && c.finished)
        // b only started after a finished (one slot): its first delta comes after a's done.
        XCTAssertEqual(s.inFlight, 0)
        XCTAssertEqual(s.metrics.activeGenerations.load(ordering: .relaxed), 0)
        XCTAssertEqual(s.metrics.queueLength.load(ordering: .relaxed), 0)
    }

    func testCancelRunningAndQueued() async throws {
        let s = scheduler(slots: 1, queue: 5, tokenMs: 50)
        let loop = group.loops[1]
        let (a, _) = try await submit(s, request("ra", maxTokens: 500), on: loop)
        let (b, _) = try await submit(s, request("rb", maxTokens: 500), on: loop)
        let (c, _) = try await submit(s, request("rc", maxTokens: 5), on: loop)
        XCTAssertEqual(s.cancel(requestID: "rb", owner: ""), .cancelled, "queued")
        await waitUntil { b.finished }
        XCTAssertEqual(b.last, "done:cancelled")
        XCTAssertEqual(s.cancel(requestID: "ra", owner: ""), .cancelled, "running")
        await waitUntil { a.finished }
        XCTAssertEqual(a.last, "done:cancelled")
        await waitUntil { c.finished }
        XCTAssertTrue(c.last == "done:length" || c.last == "done:stop", "the queued job got the freed slot")
        XCTAssertEqual(s.cancel(requestID: "ra", owner: ""), .alreadyFinished)
        XCTAssertEqual(s.cancel(requestID: "nope", owner: ""), .notFound)
        XCTAssertEqual(s.inFlight, 0)
    }

    func testAttachFromAnotherLoopReplaysEverything() async throws {
        let s = scheduler(slots: 4, queue: 4, tokenMs: 5)
        let (a, _) = try await submit(s, request("shared", maxTokens: 20), on: group.loops[0])
        await waitUntil { a.finished }
        let (b, ok) = try await submit(s, request("shared", maxTokens: 3), on: group.loops[1])
        XCTAssertTrue(ok)
        await waitUntil { b.finished }
        XCTAssertEqual(a.events.withLock { $0 }, b.events.withLock { $0 })
    }

    func testDetachingTheLastListenerCancels() async throws {
        let s = scheduler(slots: 1, queue: 1, tokenMs: 50)
        let loop = group.loops[0]
        let rec = Recorder(loop)
        let box = UncheckedBox((s, rec, request("solo", maxTokens: 500)))
        try await loop.submit {
            guard case .success(let stream) = box.value.0.submit(box.value.2, subscriber: box.value.1) else { return }
            stream.detach(box.value.1)
        }
        await waitUntil { s.inFlight == 0 }
        XCTAssertEqual(s.inFlight, 0)
        XCTAssertEqual(s.metrics.completionsCancelled.load(ordering: .relaxed), 1)
    }

    func testRequestIDsAreScopedByOwner() async throws {
        let s = scheduler(slots: 4, queue: 4, tokenMs: 50)
        var alice = request("same", maxTokens: 500)
        alice.ownerID = "alice"
        var bob = request("same", maxTokens: 5)
        bob.ownerID = "bob"
        let (a, _) = try await submit(s, alice, on: group.loops[0])
        let (b, _) = try await submit(s, bob, on: group.loops[0])
        XCTAssertEqual(s.inFlight, 2, "bob's request with alice's id starts its own generation")
        XCTAssertEqual(s.cancel(requestID: "same", owner: "mallory"), .notFound)
        XCTAssertEqual(s.cancel(requestID: "same", owner: "alice"), .cancelled)
        await waitUntil { a.finished && b.finished }
        XCTAssertEqual(a.last, "done:cancelled")
        XCTAssertNotEqual(b.last, "done:cancelled")
    }

    func testDrainingRefusesNewWork() async throws {
        let s = scheduler(slots: 1, queue: 1)
        s.beginDraining()
        let (_, ok) = try await submit(s, request("late"), on: group.loops[0])
        XCTAssertFalse(ok)
    }
}

extension SchedulerTests {
    /// A revoked key stops its running and queued generations, and only its own.
    func testCancelAllByKeyStopsOnlyThatKeysGenerations() async throws {
        let s = scheduler(slots: 2, queue: 4, tokenMs: 20)
        func keyed(_ id: String, _ key: Int64) -> CompletionRequest {
            var r = request(id, maxTokens: 200)
            r.keyID = key
            return r
        }
        let (a, _) = try await submit(s, keyed("a", 7), on: group.loops[0])   // running
        let (b, _) = try await submit(s, keyed("b", 8), on: group.loops[1])   // running, another key
        let (c, _) = try await submit(s, keyed("c", 7), on: group.loops[1])   // queued
        XCTAssertEqual(s.inFlight, 3)
        XCTAssertEqual(s.cancelAll(keyID: 7), 2)
        await waitUntil { a.finished && c.finished }
        XCTAssertEqual(a.last, "done:cancelled")
        XCTAssertEqual(c.last, "done:cancelled")
        XCTAssertFalse(b.finished, "another key's generation goes on")
        // The scheduler books a job as finished just after its subscribers hear the end.
        await waitUntil { s.inFlight == 1 }
        XCTAssertEqual(s.cancelAll(keyID: 7), 0, "nothing left to stop")
        XCTAssertEqual(s.cancelAll(keyID: 8), 1)
        await waitUntil { b.finished }
        await waitUntil { s.inFlight == 0 }
        XCTAssertEqual(s.inFlight, 0)
    }
}

extension SchedulerTests {
    /// A job taken from the queue to start on its own loop, but cancelled there before it started,
    /// still gives its slot back (it used to leak the slot: the node ran one slot short for good).
    func testJobCancelledBetweenDequeueAndStartGivesItsSlotBack() async throws {
        let s = scheduler(slots: 1, queue: 4, tokenMs: 20)
        let (a, _) = try await submit(s, request("a", maxTokens: 500), on: group.loops[0])
        let (b, _) = try await submit(s, request("b", maxTokens: 500), on: group.loops[1])
        XCTAssertEqual(s.inFlight, 2)
        let box = UncheckedBox((s, b))
        let blocked = Atomic<Bool>(false)
        group.loops[1].execute {
            blocked.store(true, ordering: .releasing)
            usleep(300_000)  // meanwhile a ends and b is dequeued; its start waits behind us
            let (sched, rec) = box.value
            _ = sched.cancel(requestID: "b", owner: "")  // b is no longer in the queue: cancelled on its loop
            _ = rec
        }
        while !blocked.load(ordering: .acquiring) { usleep(1000) }
        _ = s.cancel(requestID: "a", owner: "")
        await waitUntil { a.finished && b.finished }
        await waitUntil { s.inFlight == 0 }
        XCTAssertEqual(s.inFlight, 0, "the slot came back")
        let (c, ok) = try await submit(s, request("c", maxTokens: 2), on: group.loops[0])
        XCTAssertTrue(ok)
        await waitUntil { c.finished }
        XCTAssertEqual(c.last, "done:length", "the slot is usable")
    }
}

extension SchedulerTests {
    /// Attaching to a running generation again and again is bounded.
    func testAttachIsBoundedPerGeneration() async throws {
        let s = scheduler(slots: 2, queue: 2, tokenMs: 50)
        var recs: [Recorder] = []
        for _ in 0..<(1 + 32) {
            let (r, ok) = try await submit(s, request("same", maxTokens: 100), on: group.loops[0])
            XCTAssertTrue(ok)
            recs.append(r)
        }
        let (extra, _) = try await submit(s, request("same", maxTokens: 100), on: group.loops[0])
        await waitUntil { extra.finished }
        XCTAssertEqual(extra.last, "error:invalid_request")
        XCTAssertFalse(recs[0].finished, "the generation itself goes on")
        _ = s.cancel(requestID: "same", owner: "")
        await waitUntil { recs.allSatisfy(\.finished) }
    }
}
