import Domain
import FleetCore
import NetCore
import Runtime

/// How fast the built-in model answers: a first-token delay, then a delay per token.
public struct ModelPace: Sendable {
    public var ttftNanos: UInt64
    public var tokenNanos: UInt64
    /// ± this fraction of random variation on each delay.
    public var jitter: Double
    public init(ttftMs: Double, tokenMs: Double, jitter: Double = 0.2) {
        ttftNanos = UInt64(max(0, ttftMs) * 1e6)
        tokenNanos = UInt64(max(0, tokenMs) * 1e6)
        self.jitter = min(max(jitter, 0), 1)
    }
    public var isInstant: Bool { ttftNanos == 0 && tokenNanos == 0 }
}

/// Faults the model server injects to stand in for a failing model region (fractions 0...1).
public struct FaultPlan: Sendable {
    /// Refuse before the first token (the client sees model_unavailable).
    public var errorRate = 0.0
    /// Drop the connection after a few tokens, without an end marker.
    public var midstreamFailureRate = 0.0
    /// Stop sending tokens after a few, keeping the connection open.
    public var stallRate = 0.0
    /// Refuse with 429 and a 1 s Retry-After (throttling, not a failure).
    public var throttleRate = 0.0
    /// Send the first token `slowFirstTokenNanos` late (a stalled first token, for hedging).
    public var slowFirstTokenRate = 0.0
    public var slowFirstTokenNanos: UInt64 = 1_000_000_000
    public init() {}
    var isActive: Bool { errorRate > 0 || midstreamFailureRate > 0 || stallRate > 0 || throttleRate > 0 || slowFirstTokenRate > 0 }
}

/// The built-in n-gram model as a backend: paced by loop timers, with injectable faults.
public struct BuiltinBackend: ModelBackend {
    public let model: NGramModel
    public let pace: ModelPace
    public let faults: FaultPlan

    public init(model: NGramModel, pace: ModelPace, faults: FaultPlan = FaultPlan()) {
        self.model = model
        self.pace = pace
        self.faults = faults
    }

    public func start(_ request: CompletionRequest, seed: UInt64, on loop: EventLoop, sink: GenerationSink) -> RunningGeneration {
        let run = BuiltinRun(backend: self, request: request, seed: seed, loop: loop, sink: sink)
        run.begin()
        return run
    }
}

/// One built-in generation on its loop.
final class BuiltinRun: RunningGeneration {
    let pace: ModelPace
    let loop: EventLoop
    weak var sink: GenerationSink?
    private var generation: BuiltinGeneration
    private var jitterRandom: SeededRandom
    private var timer: TimerHandle?
    private var done = false
    private var stalled = false
    private var emitted = 0
    /// Injected fault for this run: fail after this many tokens (midstream) or stall.
    private var faultAfterTokens: Int?
    private var faultIsStall = false
    private var refuse = false
    private var throttle = false
    private var extraFirstTokenNanos: UInt64 = 0

    init(backend: BuiltinBackend, request: CompletionRequest, seed: UInt64, loop: EventLoop, sink: GenerationSink) {
        pace = backend.pace
        self.loop = loop
        self.sink = sink
        generation = BuiltinGeneration(model: backend.model, prompt: request.prompt, parameters: request.parameters, seed: seed)
        jitterRandom = SeededRandom(seed: seed)
        let faults = backend.faults
        if faults.isActive {
            var g = SystemRandomNumberGenerator()
            let roll = Double.random(in: 0..<1, using: &g)
            if roll < faults.errorRate {
                refuse = true
            } else if roll < faults.errorRate + faults.midstreamFailureRate {
                faultAfterTokens = Int.random(in: 1...3, using: &g)
            } else if roll < faults.errorRate + faults.midstreamFailureRate + faults.stallRate {
                faultAfterTokens = Int.random(in: 1...3, using: &g)
                faultIsStall = true
            } else if roll < faults.errorRate + faults.midstreamFailureRate + faults.stallRate + faults.throttleRate {
                throttle = true
            }
            if Double.random(in: 0..<1, using: &g) < faults.slowFirstTokenRate { extraFirstTokenNanos = faults.slowFirstTokenNanos }
        }
    }

    func begin() {
        if refuse {
            done = true
            sink?.failed(APIError(.modelUnavailable, "the model is unavailable (injected fault)", retryAfterMs: 100), dropTransport: false)
            return
        }
        if throttle {
            done = true
            sink?.failed(APIError(.rateLimitExceeded, "too many requests (injected fault)", retryAfterMs: 1000), dropTransport: false)
            return
        }
        if extraFirstTokenNanos > 0 {
            timer = loop.schedule(afterNanos: delay(pace.ttftNanos) + extraFirstTokenNanos) { [weak self] in self?.tick() }
            return
        }
        if pace.isInstant {
            burst()
        } else {
            timer = loop.schedule(afterNanos: delay(pace.ttftNanos)) { [weak self] in self?.tick() }
        }
    }

    func cancel() -> Usage {
        done = true
        timer?.cancel()
        timer = nil
        return usage
    }

    private var usage: Usage { Usage(promptTokens: generation.promptTokens, completionTokens: generation.completionTokens) }

    /// Tokens one burst makes before the loop serves its other sockets.
    static let burstTokens = 256
    /// How often a backlogged burst looks again whether its receiver drained.
    static let backlogRetryNanos: UInt64 = 1_000_000

    /// Zero pace: every token exists at once, written in bursts flushed once per socket. A burst
    /// stops at `burstTokens` (the loop serves its other sockets, then it goes on) or when the
    /// receiver is backlogged (it looks again shortly): a long answer never holds the loop, nor
    /// piles up faster than it is sent.
    private func burst() {
        timer = nil
        guard sink != nil else { done = true; return }
        var made = 0
        loop.deferringWrites {
            while !done && !stalled && made < Self.burstTokens && sink?.isBacklogged != true {
                step()
                made += 1
            }
        }
        guard !done && !stalled else { return }
        let wait = made < Self.burstTokens ? Self.backlogRetryNanos : 0
        timer = loop.schedule(afterNanos: wait) { [weak self] in
            guard let self, !self.done else { return }
            self.burst()
        }
    }

    private func tick() {
        timer = nil
        guard !done else { return }
        step()
        if !done && !stalled {
            timer = loop.schedule(afterNanos: delay(pace.tokenNanos)) { [weak self] in self?.tick() }
        }
    }

    private func delay(_ base: UInt64) -> UInt64 {
        let j = pace.jitter
        guard j > 0, base > 0 else { return base }
        let f = 1 + j * (jitterRandom.unit() * 2 - 1)
        return UInt64(Double(base) * f)
    }

    private func step() {
        if let n = faultAfterTokens, emitted >= n {
            if faultIsStall {
                stalled = true  // keeps the connection, sends nothing more
                return
            }
            done = true
            sink?.failed(APIError(.generationInterrupted, "the model connection dropped mid-answer (injected fault)"), dropTransport: true)
            return
        }
        switch generation.next() {
        case .token(let text):
            emitted += 1
            sink?.token(text)
        case .finished(let reason):
            done = true
            sink?.finished(reason, usage: usage, upstream: "builtin")
        }
    }
}
