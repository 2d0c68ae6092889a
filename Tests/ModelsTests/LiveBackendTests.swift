import Domain
import FleetCore
import Models
import NetCore
import Runtime
import Synchronization
import XCTest

/// Records what a backend pushes, on its loop.
final class SinkRecorder: GenerationSink, @unchecked Sendable {
    let log = Mutex<[String]>([])
    func token(_ text: String) { log.withLock { $0.append("t") } }
    func finished(_ reason: FinishReason, usage: Usage, upstream: String) {
        log.withLock { $0.append("finished:\(reason.rawValue):\(usage.completionTokens):\(upstream)") }
    }
    func failed(_ error: APIError, dropTransport: Bool) { log.withLock { $0.append("failed:\(error.code.rawValue):\(dropTransport)") } }
    var entries: [String] { log.withLock { $0 } }
}

/// The built-in model behind the push-based backend interface: pace, cancel and injected faults.
final class LiveBackendTests: XCTestCase {
    static let model = NGramModel()
    var group: EventLoopGroup!
    override func setUp() {
        group = try! EventLoopGroup(count: 1)
        group.start()
    }
    override func tearDown() { group.shutdown() }

    func request(maxTokens: Int) -> CompletionRequest {
        CompletionRequest(requestID: "r", clientSuppliedID: false, prompt: "The sea",
                          parameters: GenerationParameters(model: "builtin", temperature: 0.9, maxTokens: maxTokens, seed: 5),
                          stream: true, flavor: .text)
    }

    func start(_ backend: BuiltinBackend, _ r: CompletionRequest, _ sink: SinkRecorder) async throws -> RunningGeneration {
        let box = UncheckedBox((backend, r, sink))
        let loop = group.loops[0]
        return try await loop.submit { UncheckedBox(box.value.0.start(box.value.1, seed: 5, on: loop, sink: box.value.2)) }.value
    }

    func waitUntil(_ cond: () -> Bool) async {
        let end = monotonicNanos() + 5_000_000_000
        while !cond() && monotonicNanos() < end { try? await Task.sleep(nanoseconds: 2_000_000) }
    }

    func testTokensThenOneEnd() async throws {
        let sink = SinkRecorder()
        _ = try await start(BuiltinBackend(model: Self.model, pace: ModelPace(ttftMs: 0, tokenMs: 0)), request(maxTokens: 7), sink)
        await waitUntil { sink.entries.last?.hasPrefix("finished") == true }
        XCTAssertEqual(sink.entries, Array(repeating: "t", count: 7) + ["finished:length:7:builtin"])
    }

    func testCancelStopsThePushes() async throws {
        let sink = SinkRecorder()
        let run = try await start(BuiltinBackend(model: Self.model, pace: ModelPace(ttftMs: 5, tokenMs: 5, jitter: 0)), request(maxTokens: 100), sink)
        await waitUntil { sink.entries.count >= 3 }
        let box = UncheckedBox(run)
        let usage = try await group.loops[0].submit { box.value.cancel() }
        let seen = sink.entries.count
        try await Task.sleep(nanoseconds: 60_000_000)
        XCTAssertEqual(sink.entries.count, seen, "nothing after cancel")
        XCTAssertEqual(usage.completionTokens, seen)
        XCTAssertFalse(sink.entries.contains { $0.hasPrefix("finished") || $0.hasPrefix("failed") })
    }

    func testInjectedFaults() async throws {
        var refuse = FaultPlan()
        refuse.errorRate = 1
        let a = SinkRecorder()
        _ = try await start(BuiltinBackend(model: Self.model, pace: ModelPace(ttftMs: 0, tokenMs: 0), faults: refuse), request(maxTokens: 10), a)
        await waitUntil { !a.entries.isEmpty }
        XCTAssertEqual(a.entries, ["failed:model_unavailable:false"])

        var drop = FaultPlan()
        drop.midstreamFailureRate = 1
        let b = SinkRecorder()
        _ = try await start(BuiltinBackend(model: Self.model, pace: ModelPace(ttftMs: 0, tokenMs: 0), faults: drop), request(maxTokens: 50), b)
        await waitUntil { b.entries.last?.hasPrefix("failed") == true }
        let tokens = b.entries.filter { $0 == "t" }.count
        XCTAssertTrue((1...3).contains(tokens), "\(b.entries)")
        XCTAssertEqual(b.entries.last, "failed:generation_interrupted:true")
    }
}
