import Domain
import FleetCore
import Gateway
import Models
import NetCore
import Runtime
import Synchronization
import TestSupport
import Worker
import XCTest

/// The engine as a node on its own runs it (serve without Redis, model-server, the Redis-down
/// fallback): the gateway side and the worker side through `LocalFleet`, in one process.
final class LiveLocalEngineTests: XCTestCase {
    static let model = NGramModel()
    var group: EventLoopGroup!

    override func setUp() {
        group = try! EventLoopGroup(count: 2)
        group.start()
    }
    override func tearDown() { group.shutdown() }

    /// A node on its own: `slots` generations at once, `queue` waiting.
    final class Node: @unchecked Sendable {
        let hub: FleetCompletions
        let worker: FleetWorker
        let fleet: LocalFleet
        let metrics: Metrics
        let workerMetrics: Metrics
        var inFlight: Int { hub.inFlight }
        init(hub: FleetCompletions, worker: FleetWorker, fleet: LocalFleet, metrics: Metrics, workerMetrics: Metrics) {
            self.metrics = metrics
            self.workerMetrics = workerMetrics
            self.hub = hub
            self.worker = worker
            self.fleet = fleet
        }
        func cancel(requestID: String, owner: String) async -> CancelOutcome {
            await withCheckedContinuation { c in hub.cancel(requestID: requestID, owner: owner) { c.resume(returning: $0) } }
        }
        func beginDraining() { hub.beginDraining() }
        func cancelAll(keyID: Int64) -> Int { hub.cancelAll(keyID: keyID) }
    }

    func scheduler(slots: Int, queue: Int, tokenMs: Double = 20) -> Node {
        let logger = Logger(label: "t", level: .error)
        let fleet = LocalFleet(maxBacklog: queue)
        let metrics = Metrics()
        let hub = FleetCompletions(nodeID: "node", local: fleet, metrics: metrics, logger: logger)
        hub.start()
        let workerMetrics = Metrics(prefix: "w")
        var wc = WorkerConfiguration()
        wc.keepaliveNanos = 0
        let worker = FleetWorker(nodeID: "node", queue: fleet, relay: fleet,
                                 backend: BuiltinBackend(model: Self.model, pace: ModelPace(ttftMs: tokenMs, tokenMs: tokenMs, jitter: 0)),
                                 slots: WorkerSlots(slots: slots), loops: group.loops, metrics: workerMetrics, logger: logger, configuration: wc)
        worker.start()
        return Node(hub: hub, worker: worker, fleet: fleet, metrics: metrics, workerMetrics: workerMetrics)
    }

    func request(_ id: String, maxTokens: Int = 30, supplied: Bool = true) -> CompletionRequest {
        CompletionRequest(requestID: id, clientSuppliedID: supplied, prompt: "The sea",
                          parameters: GenerationParameters(model: "builtin", temperature: 0.9, maxTokens: maxTokens, seed: 1),
                          stream: true, flavor: .text)
    }

    /// Submits on `loop`; ok is false for a refusal (an error before `accepted`: the transport
    /// answers it as a plain error).
    func submit(_ s: Node, _ r: CompletionRequest, on loop: EventLoop) async throws -> (Recorder, Bool) {
        let rec = Recorder(loop)
        let box = UncheckedBox((s, r, rec))
        let ok = try await loop.submit { () -> Bool in
            if case .success = box.value.0.hub.submit(box.value.1, subscriber: box.value.2) { return true }
            return false
        }
        return (rec, ok && rec.kinds.first.map { !$0.hasPrefix("error") } ?? true)
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
        await waitUntil { c.ended }
        XCTAssertTrue(a.ended && b.ended && c.ended)
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
        let o1 = await s.cancel(requestID: "rb", owner: "")
        XCTAssertEqual(o1, .cancelled, "queued")
        await waitUntil { b.ended }
        XCTAssertEqual(b.last, "done:cancelled")
        let o2 = await s.cancel(requestID: "ra", owner: "")
        XCTAssertEqual(o2, .cancelled, "running")
        await waitUntil { a.ended }
        XCTAssertEqual(a.last, "done:cancelled")
        await waitUntil { c.ended }
        XCTAssertTrue(c.last == "done:length" || c.last == "done:stop", "the queued job got the freed slot")
        let o3 = await s.cancel(requestID: "ra", owner: "")
        XCTAssertEqual(o3, .alreadyFinished)
        let o4 = await s.cancel(requestID: "nope", owner: "")
        XCTAssertEqual(o4, .notFound)
        XCTAssertEqual(s.inFlight, 0)
    }

    func testAttachFromAnotherLoopReplaysEverything() async throws {
        let s = scheduler(slots: 4, queue: 4, tokenMs: 5)
        let (a, _) = try await submit(s, request("shared", maxTokens: 20), on: group.loops[0])
        await waitUntil { a.ended }
        let (b, ok) = try await submit(s, request("shared", maxTokens: 3), on: group.loops[1])
        XCTAssertTrue(ok)
        await waitUntil { b.ended }
        XCTAssertEqual(a.kinds, b.kinds)
        XCTAssertEqual(a.text, b.text)
    }

    func testDetachingTheLastListenerCancels() async throws {
        let s = scheduler(slots: 1, queue: 1, tokenMs: 50)
        let loop = group.loops[0]
        let rec = Recorder(loop)
        let box = UncheckedBox((s, rec, request("solo", maxTokens: 500)))
        try await loop.submit {
            guard case .success(let stream) = box.value.0.hub.submit(box.value.2, subscriber: box.value.1) else { return }
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
        let o5 = await s.cancel(requestID: "same", owner: "mallory")
        XCTAssertEqual(o5, .notFound)
        let o6 = await s.cancel(requestID: "same", owner: "alice")
        XCTAssertEqual(o6, .cancelled)
        await waitUntil { a.ended && b.ended }
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

extension LiveLocalEngineTests {
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
        await waitUntil { a.ended && c.ended }
        XCTAssertEqual(a.last, "done:cancelled")
        XCTAssertEqual(c.last, "done:cancelled")
        XCTAssertFalse(b.ended, "another key's generation goes on")
        // The scheduler books a job as finished just after its subscribers hear the end.
        await waitUntil { s.inFlight == 1 }
        XCTAssertEqual(s.cancelAll(keyID: 7), 0, "nothing left to stop")
        XCTAssertEqual(s.cancelAll(keyID: 8), 1)
        await waitUntil { b.ended }
        await waitUntil { s.inFlight == 0 }
        XCTAssertEqual(s.inFlight, 0)
    }
}

extension LiveLocalEngineTests {
    /// Cancelled while it waits for a slot: it ends at once, and the slot it never took is the
    /// next job's (a worker that takes it later is told to stop).
    func testCancelledWhileQueuedNeverHoldsASlot() async throws {
        let s = scheduler(slots: 1, queue: 4, tokenMs: 20)
        let (a, _) = try await submit(s, request("a", maxTokens: 500), on: group.loops[0])
        let (b, _) = try await submit(s, request("b", maxTokens: 500), on: group.loops[1])
        await waitUntil { a.kinds.contains("delta") }
        XCTAssertEqual(s.fleet.length, 1, "b waits")
        let outB = await s.cancel(requestID: "b", owner: "")
        XCTAssertEqual(outB, .cancelled)
        let outA = await s.cancel(requestID: "a", owner: "")
        XCTAssertEqual(outA, .cancelled)
        await waitUntil { a.ended && b.ended }
        await waitUntil { s.worker.running == 0 && s.fleet.length == 0 }
        XCTAssertEqual(s.worker.running, 0, "b ran for a moment at most, then was told to stop")
        let (c, ok) = try await submit(s, request("c", maxTokens: 2), on: group.loops[0])
        XCTAssertTrue(ok)
        await waitUntil { c.ended }
        XCTAssertEqual(c.last, "done:length", "the slot is usable")
    }
}

extension LiveLocalEngineTests {
    /// Attaching to a running generation again and again is bounded.
    func testAttachIsBoundedPerGeneration() async throws {
        let s = scheduler(slots: 2, queue: 2, tokenMs: 50)
        var recs: [Recorder] = []
        for _ in 0..<32 {  // the generation's first listener and 31 more
            let (r, ok) = try await submit(s, request("same", maxTokens: 100), on: group.loops[0])
            XCTAssertTrue(ok)
            recs.append(r)
        }
        let (extra, _) = try await submit(s, request("same", maxTokens: 100), on: group.loops[0])
        await waitUntil { extra.ended }
        XCTAssertEqual(extra.last, "error:invalid_request")
        XCTAssertFalse(recs[0].ended, "the generation itself goes on")
        _ = await s.cancel(requestID: "same", owner: "")
        await waitUntil { recs.allSatisfy(\.ended) }
    }
}

extension LiveLocalEngineTests {
    /// Jobs cancelled while they wait are taken back from the queue: they leave room for others
    /// at once and are never started.
    func testCancelledQueuedJobsAreWithdrawnAndNeverRun() async throws {
        let s = scheduler(slots: 1, queue: 2, tokenMs: 20)
        let loop = group.loops[0]
        let (a, _) = try await submit(s, request("a", maxTokens: 500), on: loop)
        await waitUntil { a.kinds.contains("delta") }
        let (b, okB) = try await submit(s, request("b", maxTokens: 5), on: loop)
        let (c, okC) = try await submit(s, request("c", maxTokens: 5), on: loop)
        XCTAssertTrue(okB && okC)
        XCTAssertEqual(s.fleet.length, 2)
        for id in ["b", "c"] {
            let outcome = await s.cancel(requestID: id, owner: "")
            XCTAssertEqual(outcome, .cancelled)
        }
        await waitUntil { b.ended && c.ended }
        XCTAssertEqual(s.fleet.length, 0, "taken back from the queue")
        let (d, okD) = try await submit(s, request("d", maxTokens: 3), on: loop)
        let (e, okE) = try await submit(s, request("e", maxTokens: 3), on: loop)
        XCTAssertTrue(okD && okE, "the withdrawn jobs no longer fill the backlog")
        _ = await s.cancel(requestID: "a", owner: "")
        await waitUntil { d.ended && e.ended }
        XCTAssertEqual(d.last, "done:length")
        XCTAssertEqual(e.last, "done:length")
        XCTAssertEqual(b.kinds.filter { $0 == "delta" }.count, 0, "b never ran")
        // a, d and e ran on the worker; b and c never started there.
        let w = s.workerMetrics
        await waitUntil { s.worker.running == 0 }
        XCTAssertEqual(w.completionsDone.load(ordering: .relaxed) + w.completionsLength.load(ordering: .relaxed)
                       + w.completionsCancelled.load(ordering: .relaxed), 3)
    }

    func testWithdrawTakesBackOnlyWaitingJobs() {
        let fleet = LocalFleet(maxBacklog: 3)
        func enqueue(_ id: String) -> String? {
            let got = Mutex<String?>(nil)
            let r = CompletionRequest(requestID: id, clientSuppliedID: true, prompt: "x", parameters: GenerationParameters(model: "builtin"),
                                      stream: true, flavor: .text)
            fleet.enqueue(FleetJob(request: r, ticket: .init(replyTo: "c", expiresAtMs: Int.max)), streamKey: id, holder: "n") { res in
                if case .success(.queued(let q)) = res { got.withLock { $0 = q } }
            }
            return got.withLock { $0 }
        }
        let ids = ["a", "b", "c"].map { enqueue($0)! }
        XCTAssertNil(enqueue("d"), "full")
        let claimed = Mutex<[String]>([])
        fleet.claim(consumer: "w", max: 1, blockMs: 0) { r in if case .success(let j) = r { claimed.withLock { $0 = j.map(\.id) } } }
        XCTAssertEqual(claimed.withLock { $0 }, [ids[0]])
        XCTAssertFalse(fleet.withdraw(ids[0]), "claimed already")
        XCTAssertTrue(fleet.withdraw(ids[1]))
        XCTAssertFalse(fleet.withdraw(ids[1]), "once")
        XCTAssertFalse(fleet.withdraw("99"))
        XCTAssertEqual(fleet.length, 1)
        XCTAssertNotNil(enqueue("e"))
        fleet.claim(consumer: "w", max: 5, blockMs: 0) { r in if case .success(let j) = r { claimed.withLock { $0 = j.map(\.id) } } }
        XCTAssertEqual(claimed.withLock { $0 }.count, 2, "c and e; b was skipped")
        XCTAssertFalse(claimed.withLock { $0 }.contains(ids[1]))
        XCTAssertFalse(fleet.hasWaitingJobs)
        XCTAssertEqual(fleet.length, 0)
    }
}
