import Domain
import FleetCore
import JSON
import NetCore
import Runtime
import Synchronization
import TLS

/// The model proxy: resolves a public model name (an alias) to ordered groups of upstreams and
/// streams from the best one. Routing is power of two choices on a score of first-token time and
/// load among the upstreams whose breaker lets a request through, in the first group that has
/// one; a failure before the first token retries on another upstream (then the next group); after
/// the first token a failure ends the stream with `generation_interrupted`. A first token slower
/// than the chosen upstream's p95 is hedged to a second upstream (within `hedgeFraction` of
/// requests): the first to answer wins, the other is cancelled.
public final class ProxyBackend: ModelBackend, @unchecked Sendable {
    public let upstreams: [String: Upstream]
    public let ordered: [Upstream]
    let aliases: [String: [[String]]]
    let builtin: ModelBackend
    let hedgeFraction: Double
    let warmupIdleNanos: UInt64
    /// Set once the warmup prober runs: breakers are then probed by it, not by users' requests.
    private let prober = Atomic<Bool>(false)
    let clock: @Sendable () -> UInt64
    /// A random index in a range (the power-of-two-choices pick); injected so picks are testable.
    let random: @Sendable (Range<Int>) -> Int
    /// Where attempts come from: real HTTP attempts, or a test's fakes.
    nonisolated(unsafe) var makeAttempt: AttemptFactory = { UpstreamAttempt(upstream: $0, permit: $1, startedAt: $2, listener: $3) }
    let started = Atomic<Int>(0)
    let hedged = Atomic<Int>(0)
    /// In seconds (OpenTelemetry's unit).
    public let ttft = Histogram(bounds: [0.005, 0.01, 0.025, 0.05, 0.1, 0.15, 0.2, 0.3, 0.5, 0.75, 1, 2, 5, 10])
    public let timePerToken = Histogram(bounds: [0.001, 0.0025, 0.005, 0.01, 0.02, 0.05, 0.1, 0.25, 0.5, 1])
    public let promptTokens = Atomic<Int>(0)
    public let completionTokens = Atomic<Int>(0)

    public init(config: ModelsConfig, builtin: ModelBackend, resolve: (String, Int) throws -> SocketAddress,
                clock: @escaping @Sendable () -> UInt64 = { monotonicNanos() },
                random: @escaping @Sendable (Range<Int>) -> Int = { Int.random(in: $0) }) throws {
        var ups: [String: Upstream] = [:]
        var ordered: [Upstream] = []
        for (i, u) in config.upstreams.enumerated() {
            // Every failure names the upstream and the field at fault (the node exits 2 with it).
            let at = "upstreams[\(i)] (\(u.name))"
            let address: SocketAddress
            do { address = try resolve(u.url.host, u.url.port) } catch {
                throw ConfigError("\(at).base_url: cannot resolve the host \"\(u.url.host)\" to an IPv4 address")
            }
            let up: Upstream
            do throws(TLSError) { up = try Upstream(config: u, address: address, breaker: config.breaker) } catch {
                throw ConfigError("\(at).\(u.caFile == nil ? "base_url" : "ca_file"): \(error)")
            }
            ups[u.name] = up
            ordered.append(up)
        }
        upstreams = ups
        self.ordered = ordered
        var a: [String: [[String]]] = [:]
        for (name, groups) in config.aliases { a[name] = groups }
        if a[ModelsConfig.builtin] == nil { a[ModelsConfig.builtin] = [[ModelsConfig.builtin]] }
        aliases = a
        self.builtin = builtin
        hedgeFraction = config.hedgeFraction
        warmupIdleNanos = UInt64(config.warmupIdleMs) * 1_000_000
        self.clock = clock
        self.random = random
    }

    /// Starts the warmup prober on `loop`: every 100 ms it sends a tiny request (one token) to each
    /// upstream whose breaker wants a probe, and to each that carried traffic and has been idle
    /// `warmup_idle_ms` (so it does not go cold). Users' requests then never serve as probes.
    public func startWarmups(on loop: EventLoop) {
        guard !ordered.isEmpty else { return }
        prober.store(true, ordering: .relaxed)
        let box = UncheckedBox(self)
        loop.execute { box.value.warmupTick(loop) }
    }

    /// Stops the warmup prober (its next tick does nothing and schedules nothing).
    public func stopWarmups() { prober.store(false, ordering: .relaxed) }

    private func warmupTick(_ loop: EventLoop) {
        guard prober.load(ordering: .relaxed) else { return }
        let now = clock()
        for u in ordered where u.warmupDue(now: now, idleNanos: warmupIdleNanos) {
            guard let permit = u.acquire(now: now, user: false) else { continue }
            u.warmups.add(1, ordering: .relaxed)
            Warmup(proxy: self, upstream: u, permit: permit, loop: loop).start()
        }
        _ = loop.schedule(afterNanos: 100_000_000) { [weak self] in self?.warmupTick(loop) }
    }

    public func start(_ request: CompletionRequest, seed: UInt64, on loop: EventLoop, sink: GenerationSink) -> RunningGeneration {
        let groups = aliases[request.parameters.model] ?? [[ModelsConfig.builtin]]
        started.add(1, ordering: .relaxed)
        let run = ProxyRun(proxy: self, request: request, seed: seed, loop: loop, timers: loop, sink: sink, groups: groups)
        run.next()
        return run
    }

    /// Whether one more hedge stays within the budget.
    func mayHedge() -> Bool {
        let s = started.load(ordering: .relaxed), h = hedged.load(ordering: .relaxed)
        return Double(h + 1) <= hedgeFraction * Double(max(s, 1))
    }

    /// The next upstream to try: power of two choices among the available ones of the first group
    /// that has any, skipping those tried. nil name = the built-in model. When every upstream of
    /// every group is ejected, the first group is tried anyway (never eject them all).
    func pick(_ groups: [[String]], excluding tried: Set<String>, now: UInt64) -> (upstream: Upstream?, name: String, permit: CircuitBreaker.Permit)? {
        var anyUntried = false
        for group in groups {
            let fresh = group.filter { !tried.contains($0) }
            if fresh.isEmpty { continue }
            anyUntried = true
            if fresh.contains(ModelsConfig.builtin) && fresh.allSatisfy({ $0 == ModelsConfig.builtin || !(upstreams[$0]?.available(now: now, probedByWarmups: prober.load(ordering: .relaxed)) ?? false) }) {
                return (nil, ModelsConfig.builtin, .normal)
            }
            let probed = prober.load(ordering: .relaxed)
            var candidates = fresh.compactMap { upstreams[$0] }.filter { $0.available(now: now, probedByWarmups: probed) }
            while !candidates.isEmpty {
                let chosen: Upstream
                if candidates.count == 1 { chosen = candidates[0] } else {
                    let i = random(0..<candidates.count)
                    var j = random(0..<(candidates.count - 1))
                    if j >= i { j += 1 }
                    chosen = candidates[i].score(now: now) <= candidates[j].score(now: now) ? candidates[i] : candidates[j]
                }
                if let permit = chosen.acquire(now: now) { return (chosen, chosen.config.name, permit) }
                candidates.removeAll { $0 === chosen }
            }
            if fresh.contains(ModelsConfig.builtin) { return (nil, ModelsConfig.builtin, .normal) }
        }
        guard anyUntried, tried.isEmpty else { return nil }
        // Everything is ejected: try the best of the first group rather than refuse everyone.
        let first = groups[0].compactMap { upstreams[$0] }.min { $0.score(now: now) < $1.score(now: now) }
        if let first, let permit = first.acquire(now: now, force: true) { return (first, first.config.name, permit) }
        return nil
    }

    /// Each upstream's state as one JSON array (what `admin status` prints).
    public func statusJSON() -> String {
        var w = JSONWriter(capacity: 256 * max(1, ordered.count))
        w.beginArray()
        for s in ordered.map({ $0.snapshot() }) {
            w.beginObject()
            w.key("name"); w.string(s.name)
            w.key("region"); w.string(s.region)
            w.key("model"); w.string(s.model)
            w.key("state"); w.string(s.state)
            w.key("in_flight"); w.int(s.inFlight)
            w.key("requests"); w.int(s.requests)
            w.key("errors"); w.int(s.errors)
            w.key("throttled"); w.int(s.throttled)
            w.key("ttft_ewma_ms"); w.double((s.ttftEWMAMs * 10).rounded() / 10)
            w.key("ttft_p95_ms"); if let p = s.ttftP95Ms { w.double((p * 10).rounded() / 10) } else { w.null() }
            w.key("hedges"); w.int(s.hedges)
            w.key("retries"); w.int(s.retries)
            w.key("warmups"); w.int(s.warmups)
            w.endObject()
        }
        w.endArray()
        return w.string
    }

    /// Prometheus text: the OpenTelemetry GenAI names where they exist, and per-upstream state.
    public func renderMetrics() -> String {
        var out = ""
        ttft.render("gen_ai_server_time_to_first_token_seconds", help: "Time to first token from the model proxy's upstream, seconds.", into: &out)
        timePerToken.render("gen_ai_server_time_per_output_token_seconds", help: "Time per output token after the first, seconds.", into: &out)
        out += "# HELP gen_ai_client_token_usage Tokens used by completions through the model proxy.\n# TYPE gen_ai_client_token_usage counter\n"
        out += "gen_ai_client_token_usage{gen_ai_token_type=\"input\"} \(promptTokens.load(ordering: .relaxed))\n"
        out += "gen_ai_client_token_usage{gen_ai_token_type=\"output\"} \(completionTokens.load(ordering: .relaxed))\n"
        let snaps = ordered.map { $0.snapshot() }
        func family(_ name: String, _ type: String, _ help: String, _ value: (Upstream.Snapshot) -> String) {
            out += "# HELP \(name) \(help)\n# TYPE \(name) \(type)\n"
            for s in snaps { out += "\(name){upstream=\"\(s.name)\",region=\"\(s.region)\"} \(value(s))\n" }
        }
        family("playground_upstream_breaker_state", "gauge", "0 closed, 1 half-open, 2 open.") { $0.state == "closed" ? "0" : $0.state == "half_open" ? "1" : "2" }
        family("playground_upstream_in_flight", "gauge", "Requests in flight to the upstream.") { "\($0.inFlight)" }
        family("playground_upstream_requests_total", "counter", "Requests sent to the upstream.") { "\($0.requests)" }
        family("playground_upstream_errors_total", "counter", "Requests that failed (timeouts included).") { "\($0.errors)" }
        family("playground_upstream_timeouts_total", "counter", "Requests that timed out.") { "\($0.timeouts)" }
        family("playground_upstream_throttled_total", "counter", "429 answers (weight lowered, not a failure).") { "\($0.throttled)" }
        family("playground_upstream_breaker_opened_total", "counter", "Times the breaker opened.") { "\($0.timesOpened)" }
        family("playground_upstream_hedges_total", "counter", "Hedged requests sent to this upstream.") { "\($0.hedges)" }
        family("playground_upstream_retries_total", "counter", "Requests retried on this upstream after another failed before its first token.") { "\($0.retries)" }
        family("playground_upstream_warmups_total", "counter", "Warm-up requests sent to this upstream.") { "\($0.warmups)" }
        family("playground_upstream_ttft_ewma_seconds", "gauge", "Moving average of its time to first token.") { "\($0.ttftEWMAMs / 1000)" }
        return out
    }
}

/// A one-token request that keeps an upstream warm or probes its half-open breaker.
final class Warmup: AttemptListener {
    let proxy: ProxyBackend
    let upstream: Upstream
    let permit: CircuitBreaker.Permit
    let loop: EventLoop
    var attempt: ModelAttempt?
    var selfRef: Warmup?

    init(proxy: ProxyBackend, upstream: Upstream, permit: CircuitBreaker.Permit, loop: EventLoop) {
        self.proxy = proxy
        self.upstream = upstream
        self.permit = permit
        self.loop = loop
    }

    func start() {
        selfRef = self  // alive until it ends
        var p = GenerationParameters(model: upstream.config.model)
        p.maxTokens = 1
        p.temperature = 0
        let request = CompletionRequest(requestID: "warmup", clientSuppliedID: false, prompt: "Hi", parameters: p, stream: true, flavor: .text)
        let a = proxy.makeAttempt(upstream, permit, proxy.clock(), self)
        attempt = a
        a.start(request, seed: 1, loop: loop, builtin: proxy.builtin)
    }

    func attemptToken(_ attempt: ModelAttempt, _ text: String) {
        let now = proxy.clock()
        if attempt.tokens == 1 { upstream.firstToken(afterNanos: now - attempt.startedAt, now: now, permit: permit) }
    }

    func attemptChunk(_ attempt: ModelAttempt, _ text: String, _ chunk: String, counts: Bool) {
        if counts { attemptToken(attempt, text) }
    }

    func attemptFinished(_ attempt: ModelAttempt, _ reason: FinishReason, usage: Usage?) {
        let now = proxy.clock()
        if attempt.tokens == 0 { upstream.firstToken(afterNanos: now - attempt.startedAt, now: now, permit: permit) }
        upstream.ended(now: now, permit: permit, outcome: .success)
        selfRef = nil
    }

    func attemptFailed(_ attempt: ModelAttempt, _ error: AttemptError) {
        let now = proxy.clock()
        upstream.ended(now: now, permit: permit, outcome: error.outcome(now: now))
        selfRef = nil
    }
}

/// One completion through the proxy, on its loop: attempts in order, maybe a hedge, one answer.
final class ProxyRun: RunningGeneration, AttemptListener {
    let proxy: ProxyBackend
    let request: CompletionRequest
    let seed: UInt64
    let loop: EventLoop
    /// The hedge timer's clock (the loop; a manual clock in tests).
    let timers: LoopClock
    weak var sink: GenerationSink?
    let groups: [[String]]
    var tried = Set<String>()
    var attempts: [ModelAttempt] = []
    /// The attempt whose tokens the client gets (set at the first token).
    var winner: ModelAttempt?
    var hedgeTimer: Cancellable?
    var done = false
    var lastError: AttemptError?
    let startedAt: UInt64
    var firstTokenAt: UInt64 = 0
    var tokens = 0
    /// A client that does not stream sees nothing until the end, so its answer is held here and a
    /// stream that breaks midway can start over on another upstream.
    let holdsAnswer: Bool
    var held: [(text: String, chunk: String?)] = []
    /// Output an attempt may stream before it is cut: max_tokens for each of the `n` choices of
    /// a forwarded request (worked out once: it is checked on every token).
    let tokenBound: Int

    init(proxy: ProxyBackend, request: CompletionRequest, seed: UInt64, loop: EventLoop, timers: LoopClock, sink: GenerationSink, groups: [[String]]) {
        self.proxy = proxy
        self.request = request
        self.seed = seed
        self.loop = loop
        self.timers = timers
        self.sink = sink
        self.groups = groups
        startedAt = proxy.clock()
        holdsAnswer = !request.stream
        tokenBound = request.parameters.maxTokens * max(1, min(request.passthrough?["n"]?.intValue ?? 1, ParameterPolicy.maxChoices))
    }

    /// Starts the next attempt, or ends the run when there is none left.
    func next(hedge: Bool = false) {
        guard !done else { return }
        let now = proxy.clock()
        guard let (up, name, permit) = proxy.pick(groups, excluding: tried, now: now) else {
            if hedge || !attempts.isEmpty { return }  // a hedge with nowhere to go; the running attempt goes on
            if let e = lastError, case .operatorSide(let status) = e.kind {
                return finishFailed(APIError(.upstreamError, "the model server refused this gateway's credentials, credit, route or "
                                             + "model name (HTTP \(status)); tell the operator"))
            }
            return finishFailed(APIError(.modelUnavailable, "no upstream could serve '\(request.parameters.model)'"
                                         + (lastError.map { ": \($0.message)" } ?? ""), retryAfterMs: 1000))
        }
        tried.insert(name)
        if hedge { up?.hedges.add(1, ordering: .relaxed); proxy.hedged.add(1, ordering: .relaxed) } else if tried.count > 1 { up?.retries.add(1, ordering: .relaxed) }
        let a = proxy.makeAttempt(up, permit, now, self)
        attempts.append(a)
        a.start(request, seed: seed, loop: loop, builtin: proxy.builtin)
        if !hedge, winner == nil, let up, let p95 = up.ttftP95Nanos, proxy.hedgeFraction > 0 {
            hedgeTimer?.cancel()
            hedgeTimer = timers.after(max(p95, 5_000_000)) { [weak self] in
                guard let self, !self.done, self.winner == nil, self.proxy.mayHedge() else { return }
                self.next(hedge: true)
            }
        }
    }

    func cancel() -> Usage {
        done = true
        hedgeTimer?.cancel()
        for a in attempts { abandon(a) }
        attempts.removeAll()
        return Usage(promptTokens: 0, completionTokens: tokens)
    }

    private func abandon(_ a: ModelAttempt) {
        a.cancel()
        a.upstream?.ended(now: proxy.clock(), permit: a.permit, outcome: .abandoned)
        // It lost a race, it did not fail: a held answer that has to start over may go there.
        tried.remove(a.name)
    }

    // MARK: AttemptListener

    func attemptToken(_ attempt: ModelAttempt, _ text: String) { output(attempt, text, nil, counts: true) }

    func attemptChunk(_ attempt: ModelAttempt, _ text: String, _ chunk: String, counts: Bool) { output(attempt, text, chunk, counts: counts) }

    private func output(_ attempt: ModelAttempt, _ text: String, _ chunk: String?, counts: Bool) {
        guard !done else { return }
        if winner == nil {
            winner = attempt
            hedgeTimer?.cancel()
            let now = proxy.clock()
            firstTokenAt = now
            attempt.upstream?.firstToken(afterNanos: now - attempt.startedAt, now: now, permit: attempt.permit)
            proxy.ttft.record(Double(now - startedAt) / 1e9)
            // The others lose: cancel them (their upstreams see the stream end).
            for other in attempts where other !== attempt { abandon(other) }
            attempts = [attempt]
        }
        guard attempt === winner else { return }
        // An upstream that sends more than max_tokens is stopped there (the extra token dropped):
        // the client asked for no more. (A well-behaved one ends by itself and keeps its connection.)
        if counts && tokens >= tokenBound {
            attempt.cancel()
            if (attempt as? UpstreamAttempt)?.forwarding == true {
                // A forwarded stream still ends with a finish_reason, as the upstream's would.
                emit("", UpstreamAttempt.finishChunk(.length, chat: request.flavor == .chat))
            }
            attemptFinished(attempt, .length, usage: nil)
            return
        }
        if counts { tokens += 1 }
        emit(text, chunk)
    }

    private func emit(_ text: String, _ chunk: String?) {
        if holdsAnswer { return held.append((text, chunk)) }
        deliver(text, chunk)
    }

    private func deliver(_ text: String, _ chunk: String?) {
        if let chunk { sink?.chunk(text, chunk) } else { sink?.token(text) }
    }

    func attemptFinished(_ attempt: ModelAttempt, _ reason: FinishReason, usage: Usage?) {
        guard !done else { return }
        if winner == nil {
            // Finished without a single token (an empty answer): that upstream answered; take it.
            winner = attempt
            hedgeTimer?.cancel()
            for other in attempts where other !== attempt { abandon(other) }
        }
        guard attempt === winner else { return }
        done = true
        let now = proxy.clock()
        attempt.upstream?.ended(now: now, permit: attempt.permit, outcome: .success)
        if tokens > 1 { proxy.timePerToken.record(Double(now - firstTokenAt) / 1e9 / Double(tokens - 1)) }
        // Usage from the upstream's answer, else what was streamed.
        let u = usage ?? Usage(promptTokens: 0, completionTokens: tokens)
        // Counters only grow, whatever a backend claims.
        proxy.promptTokens.add(max(0, u.promptTokens), ordering: .relaxed)
        proxy.completionTokens.add(max(0, u.completionTokens), ordering: .relaxed)
        if holdsAnswer { for h in held { deliver(h.text, h.chunk) } }
        sink?.finished(reason, usage: u, upstream: attempt.name)
    }

    func attemptFailed(_ attempt: ModelAttempt, _ error: AttemptError) {
        guard !done else { return }
        let now = proxy.clock()
        attempt.upstream?.ended(now: now, permit: attempt.permit, outcome: error.outcome(now: now))
        attempts.removeAll { $0 === attempt }
        lastError = error
        if winner == nil, case .rejected(let status, let body) = error.kind {
            // The upstream found the request wrong: another upstream would too. The client gets
            // the upstream's answer as it is (not retried; the breaker untouched).
            for other in attempts { abandon(other) }
            attempts.removeAll()
            return finishFailed(APIError.fromUpstream(status: status, error: body, message: error.message))
        }
        if attempt === winner && holdsAnswer {
            // Nothing reached the client yet: start over elsewhere.
            winner = nil
            held.removeAll()
            tokens = 0
            if attempts.isEmpty { next() }
            return
        }
        if attempt === winner {
            // Tokens were sent: the stream cannot move elsewhere.
            done = true
            hedgeTimer?.cancel()
            sink?.failed(APIError(.generationInterrupted, "the model stream broke after \(tokens) tokens (\(attempt.name): \(error.message)); retry",
                                  retryAfterMs: 0), dropTransport: false)
            return
        }
        // Before the first token: try elsewhere (unless another attempt is still running).
        if attempts.isEmpty { next() }
    }

    private func finishFailed(_ e: APIError) {
        done = true
        hedgeTimer?.cancel()
        sink?.failed(e, dropTransport: false)
    }
}
