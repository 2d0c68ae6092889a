import Dispatch
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

/// The gateway side (FleetCompletions) and the worker side (FleetWorker) through in-memory ports.
final class LiveFleetTests: XCTestCase {
    static let model = NGramModel()
    var group: EventLoopGroup!
    let logger = Logger(label: "t", level: .error)

    override func setUp() {
        group = try! EventLoopGroup(count: 2)
        group.start()
    }
    override func tearDown() { group.shutdown() }

    /// A worker node's model and slots (the old "runner": what runs, and how many at once).
    final class Node: @unchecked Sendable {
        let backend: BuiltinBackend
        let slots: WorkerSlots
        let metrics = Metrics()
        var worker: FleetWorker?
        init(backend: BuiltinBackend, slots: WorkerSlots) {
            self.backend = backend
            self.slots = slots
        }
        /// Generations running (a waiting claim reserves slots but runs nothing).
        var inFlight: Int { worker?.running ?? 0 }
    }

    func runner(tokenMs: Double, slots: Int = 256) -> Node {
        Node(backend: BuiltinBackend(model: Self.model, pace: ModelPace(ttftMs: tokenMs, tokenMs: tokenMs, jitter: 0)), slots: WorkerSlots(slots: slots))
    }

    func gateway(_ q: FakeQueue, _ r: FakeRelay, configure: (inout FleetConfiguration) -> Void = { _ in }) -> FleetCompletions {
        var c = FleetConfiguration()
        c.watchNanos = 50_000_000
        configure(&c)
        let g = FleetCompletions(nodeID: "gw", lane: FleetLane(queue: q, relay: r, remote: true, isUp: { true }), directory: q,
                                 metrics: Metrics(), logger: logger, configuration: c)
        g.start()
        return g
    }

    func worker(_ q: FakeQueue, _ r: FakeRelay, _ node: Node, id: String = "wk") -> FleetWorker {
        var c = WorkerConfiguration()
        c.blockMs = 200
        let w = FleetWorker(nodeID: id, queue: q, relay: r, backend: node.backend, slots: node.slots, loops: group.loops, metrics: node.metrics,
                            logger: logger, configuration: c)
        node.worker = w
        w.start()
        return w
    }

    func request(_ id: String, maxTokens: Int = 20) -> CompletionRequest {
        // A prompt and seed whose answer is long (144 tokens at 0.9): streams outlast what a test does to them.
        var r = CompletionRequest(requestID: id, clientSuppliedID: true, prompt: "The sea was calm in the morning, and",
                                  parameters: GenerationParameters(model: "builtin", temperature: 0.9, maxTokens: maxTokens, seed: 2),
                                  stream: true, flavor: .text)
        r.ownerID = "alice"
        return r
    }

    func submit(_ g: FleetCompletions, _ r: CompletionRequest) async throws -> (Recorder, CompletionStream?) {
        let rec = Recorder(group.loops[0])
        let box = UncheckedBox((g, r, rec))
        let stream = try await group.loops[0].submit { () -> UncheckedBox<CompletionStream?> in
            UncheckedBox(try? box.value.0.submit(box.value.1, subscriber: box.value.2).get())
        }
        return (rec, stream.value)
    }

    func testAJobRunsOnTheWorkerAndStreamsBackInOrder() async throws {
        let q = FakeQueue(), r = FakeRelay()
        let g = gateway(q, r)
        let run = runner(tokenMs: 1)
        _ = worker(q, r, run)
        let (rec, _) = try await submit(g, request("a", maxTokens: 12))
        await waitUntil { rec.ended }
        let kinds = rec.kinds
        XCTAssertEqual(kinds.first, "accepted")
        XCTAssertEqual(kinds.last, "done:length")
        XCTAssertEqual(kinds.filter { $0 == "delta" }.count, 12)
        // Deltas arrive with their indexes in order, and the job left the queue once started.
        let indexes = rec.events.withLock { $0.compactMap { if case .delta(let i, _, _) = $0 { return i } else { return nil } } }
        XCTAssertEqual(indexes, Array(0..<12))
        XCTAssertEqual(q.length, 0)
        await waitUntil { g.inFlight == 0 && run.inFlight == 0 }
        XCTAssertEqual(g.inFlight, 0)
    }

    func testASilentWorkerEndsTheStreamAsInterruptedAndIsToldToStop() async throws {
        let q = FakeQueue(), r = FakeRelay()
        let g = gateway(q, r) { $0.silenceNanos = 300_000_000 }
        let (rec, _) = try await submit(g, request("b"))
        await waitUntil { q.length == 1 }
        // A worker took it, said "accepted" and one token, then died.
        let key = StreamKey.make(owner: "alice", requestID: "b")
        r.publish(channel: g.channel, RelayMessage.event(requestID: key, .accepted(requestID: "b", model: "builtin", created: 1), worker: "w9")) { _ in }
        r.publish(channel: g.channel, RelayMessage.event(requestID: key, .delta(index: 0, text: "x"), worker: nil)) { _ in }
        let start = monotonicNanos()
        await waitUntil { rec.ended }
        let took = Double(monotonicNanos() - start) / 1e9
        XCTAssertEqual(rec.kinds, ["accepted", "delta", "error:generation_interrupted"])
        XCTAssertTrue(took >= 0.25 && took < 1.5, "\(took)")
        XCTAssertTrue(r.messages(to: FleetChannels.worker("w9")).contains { if case .cancel("b", "alice") = $0 { return true } else { return false } })
    }

    func testKeepalivesKeepASlowStreamAlive() async throws {
        let q = FakeQueue(), r = FakeRelay()
        let g = gateway(q, r) { $0.silenceNanos = 300_000_000 }
        let (rec, _) = try await submit(g, request("c"))
        let key = StreamKey.make(owner: "alice", requestID: "c")
        r.publish(channel: g.channel, RelayMessage.event(requestID: key, .accepted(requestID: "c", model: "builtin", created: 1), worker: "w1")) { _ in }
        for _ in 0..<8 {
            try await Task.sleep(nanoseconds: 100_000_000)
            r.publish(channel: g.channel, RelayMessage.keepalive(requestID: key)) { _ in }
        }
        XCTAssertEqual(rec.kinds, ["accepted"], "800 ms of keepalives is not silence")
    }

    func testALostMessageIsAnInterruptionNotAHoleInTheText() async throws {
        let q = FakeQueue(), r = FakeRelay()
        let g = gateway(q, r)
        let (rec, _) = try await submit(g, request("d"))
        let key = StreamKey.make(owner: "alice", requestID: "d")
        for m: RelayMessage in [.event(requestID: key, .accepted(requestID: "d", model: "builtin", created: 1), worker: "w1"),
                                .event(requestID: key, .delta(index: 0, text: "a"), worker: nil),
                                .event(requestID: key, .delta(index: 2, text: "c"), worker: nil)] {
            r.publish(channel: g.channel, m) { _ in }
        }
        await waitUntil { rec.ended }
        XCTAssertEqual(rec.kinds, ["accepted", "delta", "error:generation_interrupted"])
    }

    func testAFullBacklogIsRefusedBeforeAnythingIsAccepted() async throws {
        let q = FakeQueue(maxBacklog: 1), r = FakeRelay()
        let g = gateway(q, r)
        let (first, _) = try await submit(g, request("e1"))
        let (second, _) = try await submit(g, request("e2"))
        await waitUntil { second.ended }
        XCTAssertEqual(second.kinds, ["error:server_busy"], "no accepted first: the transport answers a plain 503")
        XCTAssertEqual(first.kinds, ["accepted"])
    }

    func testNoWorkerInTimeIsServerBusy() async throws {
        let q = FakeQueue(), r = FakeRelay()
        let g = gateway(q, r) { $0.queueWaitNanos = 200_000_000 }
        let (rec, _) = try await submit(g, request("f"))
        await waitUntil { rec.ended }
        XCTAssertEqual(rec.kinds, ["accepted", "error:server_busy"])
    }

    func testCancelAndDisconnectStopTheWorker() async throws {
        let q = FakeQueue(), r = FakeRelay()
        let g = gateway(q, r)
        let run = runner(tokenMs: 20)
        _ = worker(q, r, run)
        let (a, _) = try await submit(g, request("g1", maxTokens: 500))
        let (b, streamB) = try await submit(g, request("g2", maxTokens: 500))
        await waitUntil { a.kinds.contains("delta") && b.kinds.contains("delta") }
        XCTAssertEqual(run.inFlight, 2)
        let outcome = Mutex<CancelOutcome?>(nil)
        g.cancel(requestID: "g1", owner: "alice") { o in outcome.withLock { $0 = o } }
        await waitUntil { a.ended }
        XCTAssertEqual(outcome.withLock { $0 }, .cancelled)
        XCTAssertEqual(a.kinds.last, "done:cancelled")
        // The client of g2 goes away: nobody listens, the worker stops it.
        let box = UncheckedBox((streamB!, b))
        try await group.loops[0].submit { box.value.0.detach(box.value.1) }
        await waitUntil { run.inFlight == 0 }
        XCTAssertEqual(run.inFlight, 0)
        XCTAssertEqual(g.inFlight, 0)
        // Someone else's request_id is not found; a finished one says so.
        let other = Mutex<CancelOutcome?>(nil)
        g.cancel(requestID: "g1", owner: "mallory") { o in other.withLock { $0 = o } }
        g.cancel(requestID: "g1", owner: "alice") { o in outcome.withLock { $0 = o } }
        await waitUntil { other.withLock { $0 } != nil && outcome.withLock { $0 } == .alreadyFinished }
        XCTAssertEqual(other.withLock { $0 }, .notFound)
        XCTAssertEqual(outcome.withLock { $0 }, .alreadyFinished)
    }

    func testAWorkerTakesNoMoreJobsThanItHasSlots() async throws {
        let q = FakeQueue(), r = FakeRelay()
        let g = gateway(q, r)
        let run = runner(tokenMs: 20, slots: 2)
        _ = worker(q, r, run)
        var recs: [Recorder] = []
        for i in 0..<5 { recs.append(try await submit(g, request("h\(i)", maxTokens: 400)).0) }
        await waitUntil { recs.filter { $0.kinds.contains("delta") }.count == 2 }
        try await Task.sleep(nanoseconds: 200_000_000)
        // Two run; three wait on the queue for whichever worker has a slot (not in this one's memory).
        XCTAssertEqual(run.inFlight, 2)
        XCTAssertEqual(q.length, 3)
        XCTAssertEqual(recs.filter { $0.kinds.contains("delta") }.count, 2)
    }

    func testAOneSlotWorkerTakesTheNextJobAsSoonAsItsSlotFrees() async throws {
        let q = FakeQueue(), r = FakeRelay()
        let g = gateway(q, r)
        let run = runner(tokenMs: 1, slots: 1)
        _ = worker(q, r, run)
        var recs: [Recorder] = []
        for i in 0..<4 { recs.append(try await submit(g, request("s\(i)", maxTokens: 3)).0) }
        let start = monotonicNanos()
        await waitUntil { recs.allSatisfy(\.ended) }
        // One after another, each claimed when the previous one ends (not by the once-a-second
        // safety net: four jobs would take 3 s then).
        XCTAssertTrue(recs.allSatisfy { $0.kinds.last == "done:length" }, "\(recs.map(\.kinds))")
        XCTAssertLessThan(Double(monotonicNanos() - start) / 1e9, 0.9)
    }

    func testUndecodableAndExpiredJobsAreDroppedNotRun() async throws {
        let q = FakeQueue(), r = FakeRelay()
        let run = runner(tokenMs: 1)
        let w = worker(q, r, run)
        // Garbage on the queue, and a job whose gateway stopped waiting a minute ago.
        q.enqueueUnreadable(streamKey: "k1")
        var late = request("late", maxTokens: 3)
        late.ownerID = "alice"
        let expired = 1_000  // 1970: long past
        q.enqueue(FleetJob(request: late, ticket: .init(replyTo: FleetChannels.gateway("gw"), expiresAtMs: expired)),
                  streamKey: "k2", holder: "gw") { _ in }
        await waitUntil { q.length == 0 }
        XCTAssertEqual(q.length, 0, "both acknowledged")
        try await Task.sleep(nanoseconds: 50_000_000)
        XCTAssertEqual(run.metrics.completionsDone.load(ordering: .relaxed) + run.metrics.completionsLength.load(ordering: .relaxed), 0,
                       "neither ran")
        XCTAssertTrue(r.messages(to: FleetChannels.gateway("gw")).isEmpty, "nothing was said to a gateway")
        // The worker goes on: a good job after them runs.
        let g = gateway(q, r)
        let (rec, _) = try await submit(g, request("after", maxTokens: 3))
        await waitUntil { rec.ended }
        XCTAssertEqual(rec.kinds.last, "done:length")
        _ = w
    }
}
