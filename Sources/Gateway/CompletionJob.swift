import CLinux
import Domain
import ModelProxy
import NetCore
import Runtime

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
    /// The model's generation while it runs.
    private var generation: RunningGeneration?
    private var leaseTimer: TimerHandle?
    /// The request's seed, or one drawn for it.
    private let seed: UInt64

    init(request: CompletionRequest, loop: EventLoop, scheduler: CompletionScheduler) {
        self.request = request
        self.loop = loop
        self.scheduler = scheduler
        createdNanos = monotonicNanos()
        createdEpoch = Int(clinux_epochSeconds())
        seed = request.parameters.seed ?? GenerationSeeds.next()
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
        let run = scheduler.backend.start(request, seed: seed, on: loop, sink: self)
        // A backend may finish (or fail) inside `start` (a zero-pace model, a refusal).
        if state == .running { generation = run }
    }

    /// Ends the stream with finish_reason "cancelled" and frees the slot at once.
    func cancel() {
        switch state {
        case .finished: return
        case .queued:
            state = .running  // never started; the scheduler knows whether it holds a slot
            finish(.cancelled, usage: Usage(promptTokens: 0, completionTokens: 0), upstream: "builtin")
        case .running:
            let usage = generation?.cancel() ?? Usage(promptTokens: 0, completionTokens: pieces.count)
            finish(.cancelled, usage: usage, upstream: "builtin")
        }
    }

    /// Ends the stream with an error event (or silently, after an abort) and frees the slot.
    private func fail(_ error: APIError, notify: Bool = true) {
        guard state == .running else { return }
        state = .finished
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

    private func finish(_ reason: FinishReason, usage: Usage, upstream: String) {
        guard state == .running else { return }
        state = .finished
        leaseTimer?.cancel()
        leaseTimer = nil
        let end = monotonicNanos()
        let ms: (UInt64) -> Double = { Double($0) / 1e6 }
        let timings = Timings(queueMs: ms((startedNanos ?? end) - createdNanos),
                              ttftMs: firstTokenNanos.map { ms($0 - createdNanos) },
                              totalMs: ms(end - createdNanos), upstream: upstream)
        let event = CompletionEvent.done(reason, usage, timings)
        final = event
        generation = nil
        let subs = subscribers
        subscribers.removeAll()
        for s in subs { s.receive(event) }
        scheduler.finished(self, reason: reason, timings: timings, usage: usage)
    }
}

extension CompletionJob: GenerationSink {
    public func token(_ text: String) {
        guard state == .running else { return }
        if firstTokenNanos == nil { firstTokenNanos = monotonicNanos() }
        let event = CompletionEvent.delta(index: pieces.count, text: text)
        pieces.append(text)
        scheduler.metrics.tokensStreamed.add(1, ordering: .relaxed)
        for sub in subscribers { sub.receive(event) }
    }

    public func finished(_ reason: FinishReason, usage: Usage, upstream: String) {
        finish(reason, usage: usage, upstream: upstream)
    }

    public func failed(_ error: APIError, dropTransport: Bool) {
        guard state == .running else { return }
        if dropTransport { for sub in subscribers { sub.abortTransport() } }
        fail(error, notify: !dropTransport)
    }
}

/// Wall-clock seconds (for the `created` field clients see).
@inline(__always) func clinux_epochSeconds() -> UInt64 { clinux_realtime_ns() / 1_000_000_000 }
