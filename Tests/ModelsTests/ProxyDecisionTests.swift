import Domain
import FleetCore
import JSON
@testable import Models
import NetCore
import Runtime
import TestSupport
import XCTest

/// An attempt the test drives: it says what the upstream says, when the test says so.
final class FakeAttempt: ModelAttempt {
    let upstream: Upstream?
    let permit: CircuitBreaker.Permit
    let startedAt: UInt64
    weak var listener: AttemptListener?
    private(set) var tokens = 0
    private(set) var started = false
    private(set) var cancelled = false
    init(_ upstream: Upstream?, _ permit: CircuitBreaker.Permit, _ startedAt: UInt64, _ listener: AttemptListener) {
        self.upstream = upstream
        self.permit = permit
        self.startedAt = startedAt
        self.listener = listener
    }
    var name: String { upstream?.config.name ?? ModelsConfig.builtin }
    func start(_ request: CompletionRequest, seed: UInt64, loop: EventLoop, builtin: ModelBackend) { started = true }
    func cancel() { cancelled = true }
    func token(_ t: String) { tokens += 1; listener?.attemptToken(self, t) }
    func finish() { listener?.attemptFinished(self, .stop, usage: nil) }
    func fail(_ kind: AttemptError.Kind = .connect) { listener?.attemptFailed(self, AttemptError(kind: kind, message: "fake \(kind)")) }
}

/// What the client would see.
final class SinkLog: GenerationSink {
    var tokens: [String] = []
    var end: String?
    func token(_ text: String) { tokens.append(text) }
    func finished(_ reason: FinishReason, usage: Usage, upstream: String) { end = "finished \(reason.rawValue) via \(upstream)" }
    func failed(_ error: APIError, dropTransport: Bool) { end = "failed \(error.code.rawValue)" }
}

final class NoModel: ModelBackend {
    final class Run: RunningGeneration { func cancel() -> Usage { Usage(promptTokens: 0, completionTokens: 0) } }
    func start(_ request: CompletionRequest, seed: UInt64, on loop: EventLoop, sink: GenerationSink) -> RunningGeneration { Run() }
}

/// The proxy's decisions (retry before the first token, hedging after the upstream's p95, an
/// answer held for a client that does not stream, the max_tokens cut) on a manual clock with fake
/// attempts: no sockets, no sleeps.
final class ProxyDecisionTests: XCTestCase {
    let ms: UInt64 = 1_000_000
    var clock: ManualClock!
    var proxy: ProxyBackend!
    var made: [FakeAttempt] = []
    var loop: EventLoop!
    /// Runs are held by whoever started them (attempts hold them weakly).
    var runs: [ProxyRun] = []

    override func setUpWithError() throws {
        clock = ManualClock()
        let json = #"""
        {"upstreams": [{"name": "a", "base_url": "http://127.0.0.1:9/v1", "model": "m"},
                       {"name": "b", "base_url": "http://127.0.0.1:9/v1", "model": "m"}],
         "aliases": {"one-then-other": [["a"], ["b"]]}, "hedge_fraction": 1}
        """#
        let config = try ModelsConfig.parse(try JSONParser.parse(json).objectValue!, environment: { _ in nil })
        let c = clock!
        proxy = try ProxyBackend(config: config, builtin: NoModel(), resolve: { h, p in try SocketAddress(host: h, port: p) },
                                 clock: { c.nowNanos }, random: { $0.lowerBound })
        proxy.makeAttempt = { [unowned self] up, permit, at, listener in
            let a = FakeAttempt(up, permit, at, listener)
            made.append(a)
            return a
        }
        loop = try EventLoop(name: "unused")  // attempts are fakes: nothing runs on it
    }

    func run(stream: Bool = true, maxTokens: Int = 100) -> (ProxyRun, SinkLog) {
        let sink = SinkLog()
        var p = GenerationParameters(model: "one-then-other")
        p.maxTokens = maxTokens
        let request = CompletionRequest(requestID: "r", clientSuppliedID: false, prompt: "x", parameters: p, stream: stream, flavor: .text)
        let r = ProxyRun(proxy: proxy, request: request, seed: 1, loop: loop, timers: clock, sink: sink, groups: [["a"], ["b"]])
        runs.append(r)
        r.next()
        return (r, sink)
    }

    /// Gives upstream a a first-token history (five answers after `ttft`), so it has a p95.
    func warm(_ name: String, ttft: UInt64) {
        let up = proxy.upstreams[name]!
        for _ in 0..<5 {
            let permit = up.acquire(now: clock.nowNanos)!
            up.firstToken(afterNanos: ttft, now: clock.nowNanos, permit: permit)
            up.ended(now: clock.nowNanos, permit: permit, outcome: .success)
        }
    }

    func testAFailureBeforeTheFirstTokenIsRetriedOnTheNextUpstream() {
        let (_, sink) = run()
        XCTAssertEqual(made.map(\.name), ["a"])
        made[0].fail(.connect)
        XCTAssertEqual(made.map(\.name), ["a", "b"], "retried at once on the next group")
        XCTAssertTrue(made[1].started)
        made[1].token("hi")
        made[1].finish()
        XCTAssertEqual(sink.tokens, ["hi"])
        XCTAssertEqual(sink.end, "finished stop via b")
        XCTAssertEqual(proxy.upstreams["b"]!.retries.load(ordering: .relaxed), 1)
    }

    func testNothingLeftToTryIsModelUnavailable() {
        let (_, sink) = run()
        made[0].fail(.http(503))
        made[1].fail(.timeout)
        XCTAssertEqual(sink.end, "failed model_unavailable")
        XCTAssertTrue(sink.tokens.isEmpty)
    }

    func testASlowFirstTokenIsHedgedAtThePrimarysP95AndTheLoserCancelled() {
        warm("a", ttft: 100 * ms)
        let (_, sink) = run()
        XCTAssertEqual(clock.pendingTimers, 1, "the hedge is armed")
        clock.advance(by: 99 * ms)
        XCTAssertEqual(made.count, 1, "not before a's p95")
        clock.advance(by: 1 * ms)
        XCTAssertEqual(made.map(\.name), ["a", "b"], "hedged on b at a's p95")
        made[1].token("fast")
        XCTAssertTrue(made[0].cancelled, "the loser is cancelled at the winner's first token")
        made[0].token("late")  // a straggler's token is not the client's
        made[1].finish()
        XCTAssertEqual(sink.tokens, ["fast"])
        XCTAssertEqual(sink.end, "finished stop via b")
        XCTAssertEqual(proxy.upstreams["b"]!.hedges.load(ordering: .relaxed), 1)
    }

    func testAFirstTokenInTimeCancelsTheHedge() {
        warm("a", ttft: 100 * ms)
        let (_, sink) = run()
        clock.advance(by: 50 * ms)
        made[0].token("in time")
        clock.advance(by: 500 * ms)
        XCTAssertEqual(made.count, 1, "no hedge once the first token came")
        made[0].finish()
        XCTAssertEqual(sink.end, "finished stop via a")
    }

    func testAHeldAnswerStartsOverWhenItsStreamBreaksButAStreamedOneCannot() {
        let (_, held) = run(stream: false)
        made[0].token("one")
        made[0].token("two")
        XCTAssertTrue(held.tokens.isEmpty, "a client that does not stream sees nothing before the end")
        made[0].fail(.closedEarly)
        XCTAssertEqual(made.map(\.name), ["a", "b"], "started over elsewhere")
        made[1].token("whole")
        made[1].finish()
        XCTAssertEqual(held.tokens, ["whole"], "only the answer that finished")
        XCTAssertEqual(held.end, "finished stop via b")

        made.removeAll()
        let (_, live) = run(stream: true)
        made[0].token("one")
        made[0].fail(.closedEarly)
        XCTAssertEqual(made.count, 1, "tokens already reached the client: no start over")
        XCTAssertEqual(live.tokens, ["one"])
        XCTAssertEqual(live.end, "failed generation_interrupted")
    }

    func testAnUpstreamThatSendsMoreThanMaxTokensIsCutThere() {
        let (_, sink) = run(maxTokens: 2)
        for t in ["a", "b", "c", "d"] { made[0].token(t) }
        XCTAssertEqual(sink.tokens, ["a", "b"])
        XCTAssertEqual(sink.end, "finished length via a")
        XCTAssertTrue(made[0].cancelled)
    }
}
