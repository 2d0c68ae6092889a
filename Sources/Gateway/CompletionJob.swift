import CLinux
import Domain
import ModelProxy
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
    public init() {}
    var isActive: Bool { errorRate > 0 || midstreamFailureRate > 0 || stallRate > 0 }
}

/// One generation. Created by the scheduler; everything below `request` is confined to `loop`.
public final class CompletionJob: CompletionStream, @unchecked Sendable {
    public let request: CompletionRequest
    public let loop: EventLoop
    // Strong: a job handed to another loop or kept by a subscriber must never find its scheduler
    // freed; the scheduler outlives its jobs (it drops them from its registry after retention).
    let scheduler: CompletionScheduler
    let createdNanos: UInt64
    let createdEpoch: Int

    enum State { case queued, running, finished }
    private(set) var state: State = .queued
    private var startedNanos: UInt64?
    private var firstTokenNanos: UInt64?
    /// Text so far, kept so a client attaching by request_id gets the whole stream.
    private var pieces: [String] = []
    private var final: CompletionEvent?
    private var subscribers: [CompletionSubscriber] = []
    private var generation: BuiltinGeneration?
    private var timer: TimerHandle?
    private var leaseTimer: TimerHandle?
    private var jitterRandom: SeededRandom
    /// The request's seed, or one drawn for it.
    private let seed: UInt64
    /// Injected fault for this job: fail after this many tokens (midstream) or stall.
    private var faultAfterTokens: Int?
    private var faultIsStall = false

    init(request: CompletionRequest, loop: EventLoop, scheduler: CompletionScheduler) {
        self.request = request
        self.loop = loop
        self.scheduler = scheduler
        createdNanos = monotonicNanos()
        createdEpoch = Int(clinux_epochSeconds())
        seed = request.parameters.seed ?? GenerationSeeds.next()
        jitterRandom = SeededRandom(seed: seed)
    }

    public var requestID: String { request.requestID }

    // MARK: subscribers (loop thread)

    /// Listeners one running generation accepts (attach by request_id): a bound on the fan-out a
    /// client can cause by attaching again and again.
    static let maxSubscribers = 32

    /// Adds a subscriber and replays what it missed.
    func attach(_ s: CompletionSubscriber) {
        if final == nil && subscribers.count >= CompletionJob.maxSubscribers {
            s.receive(.failed(APIError(.invalidRequest, "too many clients are attached to this request_id (at most \(CompletionJob.maxSubscribers))",
                                       field: "request_id"), tokensSoFar: 0))
            return
        }
        let accepted = CompletionEvent.accepted(requestID: request.requestID, model: request.parameters.model, created: createdEpoch)
        s.receive(accepted)
        for (i, p) in pieces.enumerated() { s.receive(.delta(index: i, text: p)) }
        if let final {
            s.receive(final)
        } else {
            subscribers.append(s)
        }
    }

    /// Removes a subscriber whose client went away (call on the subscriber's loop). A generation
    /// nobody listens to is cancelled so its slot goes to someone who is waiting.
    public func detach(_ s: CompletionSubscriber) {
        if loop === s.loop {
            detachMatching { $0 === s }
        } else {
            let box = UncheckedBox(s)
            loop.execute { [self] in detachHops(of: box.value) }
        }
    }

    func detachMatching(_ match: (CompletionSubscriber) -> Bool) {
        let before = subscribers.count
        subscribers.removeAll(where: match)
        if before > 0 && subscribers.isEmpty && state != .finished {
            scheduler.cancelFromLoop(self)
        }
    }

    // MARK: lifecycle (loop thread)

    /// Calls `renew` every `every` nanoseconds until the job ends (any thread).
    func renewLease(every: UInt64, _ renew: @escaping @Sendable () -> Void) {
        let box = UncheckedBox(self)
        let arm: @Sendable () -> Void = { box.value.armLeaseTimer(every, renew) }
        if loop.inEventLoop { arm() } else { loop.execute(arm) }
    }

    private func armLeaseTimer(_ every: UInt64, _ renew: @escaping @Sendable () -> Void) {
        guard state != .finished else { return }
        leaseTimer = loop.schedule(afterNanos: every) { [weak self] in
            guard let self, self.state != .finished else { return }
            renew()
            self.armLeaseTimer(every, renew)
        }
    }

    func start() {
        guard state == .queued else { return }
        state = .running
        startedNanos = monotonicNanos()
        generation = BuiltinGeneration(model: scheduler.model, prompt: request.prompt, parameters: request.parameters, seed: seed)
        let faults = scheduler.faults
        if faults.isActive {
            var g = SystemRandomNumberGenerator()
            let roll = Double.random(in: 0..<1, using: &g)
            if roll < faults.errorRate {
                fail(APIError(.modelUnavailable, "the model is unavailable (injected fault)", retryAfterMs: 100))
                return
            } else if roll < faults.errorRate + faults.midstreamFailureRate {
                faultAfterTokens = Int.random(in: 1...3, using: &g)
            } else if roll < faults.errorRate + faults.midstreamFailureRate + faults.stallRate {
                faultAfterTokens = Int.random(in: 1...3, using: &g)
                faultIsStall = true
            }
        }
        if scheduler.pace.isInstant {
            // Every token exists at the same instant: write them in one burst, flushed once per socket.
            loop.deferringWrites {
                while state == .running && !stalled { step() }
            }
        } else {
            timer = loop.schedule(afterNanos: delay(scheduler.pace.ttftNanos)) { [weak self] in self?.tick() }
        }
    }

    private var stalled = false

    private func tick() {
        timer = nil
        guard state == .running else { return }
        step()
        if state == .running && !stalled {
            timer = loop.schedule(afterNanos: delay(scheduler.pace.tokenNanos)) { [weak self] in self?.tick() }
        }
    }

    private func delay(_ base: UInt64) -> UInt64 {
        let j = scheduler.pace.jitter
        guard j > 0, base > 0 else { return base }
        let f = 1 + j * (jitterRandom.unit() * 2 - 1)
        return UInt64(Double(base) * f)
    }

    private func step() {
        if let n = faultAfterTokens, pieces.count >= n {
            if faultIsStall {
                timer?.cancel()
                timer = nil
                stalled = true
                return
            }
            for sub in subscribers { sub.abortTransport() }
            fail(APIError(.generationInterrupted, "the model connection dropped mid-answer (injected fault)"), notify: false)
            return
        }
        guard var g = generation else { return }
        let s = g.next()
        generation = g
        switch s {
        case .token(let text):
            if firstTokenNanos == nil { firstTokenNanos = monotonicNanos() }
            let event = CompletionEvent.delta(index: pieces.count, text: text)
            pieces.append(text)
            scheduler.metrics.tokensStreamed.add(1, ordering: .relaxed)
            for sub in subscribers { sub.receive(event) }
        case .finished(let reason):
            finish(reason)
        }
    }

    /// Ends the stream with finish_reason "cancelled" and frees the slot at once.
    func cancel() {
        switch state {
        case .finished: return
        case .queued:
            state = .running  // never started; the scheduler knows whether it holds a slot
            finish(.cancelled)
        case .running:
            finish(.cancelled)
        }
    }

    /// Ends the stream with an error event (or silently, after an abort) and frees the slot.
    private func fail(_ error: APIError, notify: Bool = true) {
        guard state == .running else { return }
        state = .finished
        timer?.cancel()
        timer = nil
        leaseTimer?.cancel()
        leaseTimer = nil
        let event = CompletionEvent.failed(error, tokensSoFar: pieces.count)
        final = event
        generation = nil
        let subs = subscribers
        subscribers.removeAll()
        if notify { for s in subs { s.receive(event) } }
        scheduler.failed(self, error: error)
    }

    private func finish(_ reason: FinishReason) {
        guard state == .running else { return }
        state = .finished
        timer?.cancel()
        timer = nil
        leaseTimer?.cancel()
        leaseTimer = nil
        let end = monotonicNanos()
        let usage = Usage(promptTokens: generation?.promptTokens ?? 0, completionTokens: generation?.completionTokens ?? 0)
        let ms: (UInt64) -> Double = { Double($0) / 1e6 }
        let timings = Timings(queueMs: ms((startedNanos ?? end) - createdNanos),
                              ttftMs: firstTokenNanos.map { ms($0 - createdNanos) },
                              totalMs: ms(end - createdNanos), upstream: "builtin")
        let event = CompletionEvent.done(reason, usage, timings)
        final = event
        generation = nil
        let subs = subscribers
        subscribers.removeAll()
        for s in subs { s.receive(event) }
        scheduler.finished(self, reason: reason, timings: timings, usage: usage)
    }
}

/// Wall-clock seconds (for the `created` field clients see).
@inline(__always) func clinux_epochSeconds() -> UInt64 { clinux_realtime_ns() / 1_000_000_000 }
