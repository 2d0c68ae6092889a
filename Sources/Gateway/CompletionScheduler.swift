import Domain
import ModelProxy
import NetCore
import Runtime
import Synchronization

public struct SchedulerConfiguration: Sendable {
    /// Generations that may run at once on this node.
    public var slots = 256
    /// Completions that may wait for a slot; past this, `server_busy` at once.
    public var maxQueue = 1024
    /// How long a finished completion can be replayed by its request_id.
    public var retentionNanos: UInt64 = 120_000_000_000
    /// At most this many finished completions are kept for replay.
    public var maxRetained = 20_000
    public init() {}
}

/// A bounded FIFO queue in front of a fixed number of worker slots, and the registry of
/// completions by request_id (attach to a running one, replay a finished one).
///
/// Thread rules: the scheduler's own state is behind one mutex, taken briefly per request; a
/// job's state belongs to the job's loop.
public final class CompletionScheduler: CompletionService, @unchecked Sendable {
    public let configuration: SchedulerConfiguration
    /// Where tokens come from (the built-in model; upstream model servers later).
    public let backend: ModelBackend
    public let metrics: Metrics
    let logger: Logger
    /// Where admitted requests hold their leases: renewed while they run, released however they end.
    public var admission: Admission?

    private struct State {
        var running = 0
        var queue: [CompletionJob] = []
        var queueHead = 0
        var jobs: [String: CompletionJob] = [:]
        var finished: [(id: String, at: UInt64)] = []
        var finishedHead = 0
        var finishedIDs: Set<String> = []
        var draining = false
        /// Jobs that hold a slot (started, or taken from the queue to start): a job gives a slot
        /// back only if it holds one, whatever way it ends — a job taken from the queue and
        /// cancelled before its loop started it still holds one.
        var slotHolders = Set<ObjectIdentifier>()
        var queuedCount: Int { queue.count - queueHead }
    }
    private let state = Mutex(State())

    public init(configuration: SchedulerConfiguration, backend: ModelBackend, metrics: Metrics, logger: Logger) {
        self.configuration = configuration
        self.backend = backend
        self.metrics = metrics
        self.logger = logger
    }

    /// With the built-in model at `pace`.
    public convenience init(configuration: SchedulerConfiguration, model: NGramModel, pace: ModelPace, metrics: Metrics, logger: Logger,
                            faults: FaultPlan = FaultPlan()) {
        self.init(configuration: configuration, backend: BuiltinBackend(model: model, pace: pace, faults: faults), metrics: metrics, logger: logger)
    }

    public enum SubmitError: Error { case busy(retryAfterMs: Int) }

    /// Starts, queues or (for a known client-supplied request_id) attaches to a completion.
    /// The subscriber receives the events on its loop. Call on the subscriber's loop.
    public func submit(_ request: CompletionRequest, subscriber: CompletionSubscriber) -> Result<CompletionStream, APIError> {
        submitJob(request, subscriber: subscriber).map { $0 }
    }

    func submitJob(_ request: CompletionRequest, subscriber: CompletionSubscriber) -> Result<CompletionJob, APIError> {
        let loop = subscriber.loop
        enum Outcome { case start(CompletionJob), queued(CompletionJob), attach(CompletionJob), busy(Bool), gone }
        let outcome: Outcome = state.withLock { s in
            let key = CompletionScheduler.key(request.ownerID, request.requestID)
            if request.clientSuppliedID, let existing = s.jobs[key] { return .attach(existing) }
            if request.replayOnly { return .gone }
            // A generated id never repeats; a client id that is busy under another owner cannot be, as keys include the owner.
            if s.draining { return .busy(true) }
            let job = CompletionJob(request: request, loop: loop, scheduler: self)
            if s.running < configuration.slots {
                s.running += 1
                s.slotHolders.insert(ObjectIdentifier(job))
                s.jobs[key] = job
                return .start(job)
            }
            if s.queuedCount < configuration.maxQueue {
                s.queue.append(job)
                s.jobs[key] = job
                return .queued(job)
            }
            return .busy(false)
        }
        switch outcome {
        case .gone:
            return .failure(APIError.requestIDUsed)
        case .busy(let draining):
            metrics.completionsBusy.add(1, ordering: .relaxed)
            return .failure(APIError(.serverBusy, draining ? "this node is shutting down; retry on another" : "all worker slots are busy and the queue is full",
                                     retryAfterMs: draining ? 100 : 1000))
        case .start(let job):
            metrics.activeGenerations.add(1, ordering: .relaxed)
            keepLease(of: job)
            job.attach(subscriber)
            job.start()
            return .success(job)
        case .queued(let job):
            metrics.queueLength.add(1, ordering: .relaxed)
            keepLease(of: job)
            job.attach(subscriber)
            return .success(job)
        case .attach(let job):
            if job.loop === loop {
                job.attach(subscriber)
            } else {
                let hop = UncheckedBox(LoopHop(target: subscriber, jobLoop: job.loop))
                job.loop.execute { job.attach(hop.value) }
            }
            return .success(job)
        }
    }


    static func key(_ owner: String, _ id: String) -> String { owner + "\u{0}" + id }

    public func cancel(requestID: String, owner: String, done: @escaping @Sendable (CancelOutcome) -> Void) {
        done(cancel(requestID: requestID, owner: owner))
    }

    /// Cancels one of `owner`'s completions by request_id, from any thread.
    @discardableResult
    public func cancel(requestID: String, owner: String) -> CancelOutcome {
        let key = CompletionScheduler.key(owner, requestID)
        let found: (CompletionJob, Bool, Bool)? = state.withLock { s in
            guard let job = s.jobs[key] else { return nil }
            if s.finishedIDs.contains(key) { return (job, true, false) }
            // A queued job leaves the queue now; its slot was never taken.
            if let i = s.queue[s.queueHead...].firstIndex(where: { $0 === job }) {
                s.queue.remove(at: i)
                return (job, false, true)
            }
            return (job, false, false)
        }
        guard let (job, finished, wasQueued) = found else { return .notFound }
        if finished { return .alreadyFinished }
        if wasQueued { metrics.queueLength.subtract(1, ordering: .relaxed) }
        if job.loop.inEventLoop { job.cancel() } else { job.loop.execute { job.cancel() } }
        return .cancelled
    }

    /// Cancels every running or queued completion made with API key `keyID` (the key was revoked);
    /// returns how many. From any thread.
    @discardableResult
    public func cancelAll(keyID: Int64) -> Int {
        let hit: [(CompletionJob, Bool)] = state.withLock { s in
            var out: [(CompletionJob, Bool)] = []
            for (key, job) in s.jobs where job.request.keyID == keyID && !s.finishedIDs.contains(key) {
                var queued = false
                if let i = s.queue[s.queueHead...].firstIndex(where: { $0 === job }) {
                    s.queue.remove(at: i)
                    queued = true
                }
                out.append((job, queued))
            }
            return out
        }
        for (job, queued) in hit {
            if queued { metrics.queueLength.subtract(1, ordering: .relaxed) }
            if job.loop.inEventLoop { job.cancel() } else { job.loop.execute { job.cancel() } }
        }
        return hit.count
    }

    /// Cancels a job whose last listener left (job loop only); a queued one leaves the queue.
    func cancelFromLoop(_ job: CompletionJob) {
        let wasQueued: Bool = state.withLock { s in
            if let i = s.queue[s.queueHead...].firstIndex(where: { $0 === job }) {
                s.queue.remove(at: i)
                return true
            }
            return false
        }
        if wasQueued { metrics.queueLength.subtract(1, ordering: .relaxed) }
        job.cancel()
    }

    /// Called by a job on its loop when it ends in an error.
    func failed(_ job: CompletionJob, error: APIError) {
        metrics.completionsError.add(1, ordering: .relaxed)
        logger.warning("completion failed", ["request_id": job.requestID, "code": error.code.rawValue, "error": error.message])
        release(job)
    }

    /// Called by a job on its loop when it ends.
    func finished(_ job: CompletionJob, reason: FinishReason, timings: Timings, usage: Usage) {
        metrics.recordFinished(reason, timings: timings)
        logger.info("completion finished", [
            "request_id": job.requestID, "finish_reason": reason.rawValue, "completion_tokens": "\(usage.completionTokens)",
            "queue_ms": format(timings.queueMs), "ttft_ms": timings.ttftMs.map(format) ?? "-", "total_ms": format(timings.totalMs),
        ])
        release(job)
    }

    /// Renews an admitted job's lease every TTL/3 on the job's loop until the job ends.
    private func keepLease(of job: CompletionJob) {
        guard let admission, job.request.fence != 0 else { return }
        let every = max(admission.leaseTTLNanos / 3, 1_000_000)
        let user = job.request.ownerID, id = job.requestID  // not the job: its timer holds this closure
        job.renewLease(every: every) { [weak admission] in admission?.renew(user: user, requestID: id) }
    }

    /// Gives the job's slot to the next queued job and keeps the job for replay.
    private func release(_ job: CompletionJob) {
        if job.request.fence != 0 { admission?.release(user: job.request.ownerID, requestID: job.requestID) }
        let now = monotonicNanos()
        let jobKey = CompletionScheduler.key(job.request.ownerID, job.requestID)
        let (releaseSlot, next): (Bool, CompletionJob?) = state.withLock { s in
            s.finished.append((jobKey, now))
            s.finishedIDs.insert(jobKey)
            // Forget finished jobs past retention (oldest first).
            while s.finishedHead < s.finished.count {
                let (id, at) = s.finished[s.finishedHead]
                guard now - at > configuration.retentionNanos || s.finished.count - s.finishedHead > configuration.maxRetained else { break }
                if s.finishedIDs.contains(id) { s.jobs[id] = nil }
                s.finishedIDs.remove(id)
                s.finishedHead += 1
            }
            if s.finishedHead > 4096 && s.finishedHead * 2 > s.finished.count {
                s.finished.removeFirst(s.finishedHead)
                s.finishedHead = 0
            }
            guard s.slotHolders.remove(ObjectIdentifier(job)) != nil else { return (false, nil) }
            s.running -= 1
            guard s.queueHead < s.queue.count else { return (true, nil) }
            let n = s.queue[s.queueHead]
            s.queueHead += 1
            if s.queueHead > 1024 && s.queueHead * 2 > s.queue.count {
                s.queue.removeFirst(s.queueHead)
                s.queueHead = 0
            }
            s.running += 1
            s.slotHolders.insert(ObjectIdentifier(n))
            return (true, n)
        }
        if releaseSlot { metrics.activeGenerations.subtract(1, ordering: .relaxed) }
        if let next {
            metrics.queueLength.subtract(1, ordering: .relaxed)
            metrics.activeGenerations.add(1, ordering: .relaxed)
            if next.loop.inEventLoop { next.start() } else { next.loop.execute { next.start() } }
        }
    }

    private func format(_ v: Double) -> String { "\((v * 10).rounded() / 10)" }

    /// Stops taking new completions (SIGTERM); running ones go on.
    public func beginDraining() { state.withLock { $0.draining = true } }

    public var isDraining: Bool { state.withLock { $0.draining } }

    /// Generations running or queued.
    public var inFlight: Int { state.withLock { $0.running + $0.queuedCount } }
}

/// Delivers a job's events to a subscriber that lives on another loop.
final class LoopHop: CompletionSubscriber, @unchecked Sendable {
    let target: CompletionSubscriber
    let loop: EventLoop
    init(target: CompletionSubscriber, jobLoop: EventLoop) {
        self.target = target
        loop = jobLoop
    }
    func receive(_ event: CompletionEvent) {
        let t = UncheckedBox(target)
        target.loop.execute { t.value.receive(event) }
    }
}

extension CompletionJob {
    /// Detaches `subscriber`, directly or through the hop that carries it (job loop only).
    func detachHops(of subscriber: CompletionSubscriber) {
        detachMatching { s in s === subscriber || (s as? LoopHop)?.target === subscriber }
    }
}
