import Domain
import FleetCore
import NetCore
import Runtime
import Synchronization

public struct WorkerConfiguration: Sendable {
    /// Generations this node runs at once (shared by every queue it pulls from).
    public var slots = 256
    /// Jobs taken in one claim (never more than free slots).
    public var claimBatch = 32
    /// How long one claim waits for a job (a queue that wakes its workers is never waited on).
    public var blockMs = 1000
    /// How often silent workers' jobs are looked for, and the backlog counted.
    public var reclaimEveryNanos: UInt64 = 1_000_000_000
    /// A job delivered to a worker that has not started it for this long is taken over.
    public var reclaimMinIdleMs = 2000
    /// Deliveries after which a job is dead-lettered and its client told.
    public var maxDeliveries = 3
    /// Quiet time after which a running job says "still running" to its gateway (0: never, for
    /// a queue in this process, whose worker cannot go silent on its own).
    public var keepaliveNanos: UInt64 = 500_000_000
    public init() {}
}

/// The slots of one worker node, shared by the pullers of every queue it takes jobs from.
public final class WorkerSlots: Sendable {
    let table: Mutex<SlotTable>
    private let idle = IdleSignal()
    public init(slots: Int) {
        table = Mutex(SlotTable(slots: slots))
    }
    /// Generations running or claimed to run.
    public var inFlight: Int { table.withLock { $0.inFlight } }
    public var slots: Int { table.withLock { $0.slots } }
    /// Slots a job of this process's own could start on now (free, or held by a waiting claim).
    public var available: Int { table.withLock { $0.available } }
    func update<R>(_ body: (inout SlotTable) -> R) -> R {
        let (r, nothing) = table.withLock { t in (body(&t), t.isIdle) }
        if nothing { idle.fire() }
        return r
    }
    /// Calls `body` once nothing runs or is claimed (at once if nothing is).
    public func whenIdle(_ body: @escaping @Sendable () -> Void) {
        idle.whenIdle({ table.withLock { $0.isIdle } }, body)
    }
}

/// The worker side of the fleet, for one queue: pulls jobs only while the node has free slots
/// (the least loaded worker wins), runs each as one `GenerationRun` into a relay publisher to
/// the gateway that holds the client. A job is acknowledged once started (after that, a dead
/// worker shows as silence to the gateway, which ends the stream as interrupted); a job claimed by
/// a worker that died before starting it is taken over by another, and dead-lettered after too
/// many deliveries. Cancels arrive on the worker's own channel. The worker never touches
/// admission: the gateway holds the lease. Knows the ports, not Redis.
public final class FleetWorker: @unchecked Sendable {
    public let nodeID: String
    public let channel: String
    let queue: JobQueue
    let relay: EventRelay
    let backend: ModelBackend
    let slots: WorkerSlots
    let loops: [EventLoop]
    let metrics: Metrics
    let logger: Logger
    let configuration: WorkerConfiguration
    /// Whether claims wait for jobs (false: the queue wakes this worker when one arrives).
    private let claimsWait: Bool

    private struct State {
        var claiming = false
        /// Asked to claim while a claim was out: claim again when it ends (a wake-up is never lost).
        var again = false
        var stopped = false
        var nextLoop = 0
        /// Running generations by stream key (cancels find them here).
        var runs: [String: GenerationRun] = [:]
    }
    private let state = Mutex(State())
    private var reclaimTimer: TimerHandle?
    /// A generation whose gateway is gone (its events reached nobody): the lease's owner died
    /// with it, so the worker hands the lease back through this (wired to admission by the
    /// composition root) instead of leaving the user blocked until the lease's TTL. The only
    /// time a worker touches a lease; the worker module knows no admission.
    public var onAbandoned: (@Sendable (CompletionRequest) -> Void)?
    /// Stream links to gateways (jobs that name a link stream there); nil: the relay only.
    public var links: LinkPool?

    public init(nodeID: String, queue: JobQueue, relay: EventRelay, backend: ModelBackend, slots: WorkerSlots, loops: [EventLoop],
                metrics: Metrics, logger: Logger, configuration: WorkerConfiguration = WorkerConfiguration()) {
        self.nodeID = nodeID
        channel = FleetChannels.worker(nodeID)
        self.queue = queue
        self.relay = relay
        self.backend = backend
        self.slots = slots
        self.loops = loops
        self.metrics = metrics
        self.logger = logger
        self.configuration = configuration
        claimsWait = !(queue is JobArrivals)
    }

    public func start() {
        relay.subscribe(channel: channel) { [weak self] message in
            guard let self, case .cancel(let id, let owner) = message else { return }
            self.cancel(key: StreamKey.make(owner: owner, requestID: id))
        }
        if let arrivals = queue as? JobArrivals { arrivals.whenJobArrives { [weak self] in self?.pump() } }
        pump()
        let box = UncheckedBox(self)
        loops[0].execute { box.value.scheduleReclaim() }
    }

    /// Takes no more jobs; the ones running go on.
    public func stop() {
        state.withLock { $0.stopped = true }
        slots.update { $0.drain() }
        let box = UncheckedBox(self)
        loops[0].execute { box.value.reclaimTimer?.cancel() }
    }

    /// Generations this worker runs now.
    public var running: Int { state.withLock { $0.runs.count } }

    /// Claims as many jobs as there are free slots, unless a claim is already out.
    func pump() {
        let go = state.withLock { s -> Bool in
            guard !s.stopped else { return false }
            guard !s.claiming else {
                s.again = true
                return false
            }
            s.claiming = true
            s.again = false
            return true
        }
        guard go else { return }
        // A queue that wakes its workers says cheaply whether anything waits.
        if let arrivals = queue as? JobArrivals, !arrivals.hasWaitingJobs {
            if claimDone() { pump() }
            return
        }
        // A claim that waits holds its slots loosely: this process's own queue may take them.
        let asked = slots.update { claimsWait ? $0.reserveWaiting(upTo: configuration.claimBatch) : $0.reservePreempting(upTo: configuration.claimBatch) }
        guard asked > 0 else {
            if claimDone() { pump() }
            return
        }
        queue.claim(consumer: nodeID, max: asked, blockMs: claimsWait ? configuration.blockMs : 0) { [self] result in
            switch result {
            case .success(let jobs):
                if !jobs.isEmpty { logger.debug("jobs claimed", ["count": "\(jobs.count)"]) }
                if claimsWait {
                    let over = slots.update { $0.claimedWaiting(jobs.count) }
                    if over > 0 { logger.debug("running over the slots for a moment: this process's own jobs took them", ["count": "\(over)"]) }
                } else {
                    slots.update { $0.claimed(jobs.count, of: asked) }
                }
                let again = claimDone()
                for job in jobs { run(job) }
                // A queue that wakes its workers is asked again only when it has work.
                if claimsWait || again || !jobs.isEmpty { pump() }
            case .failure(let e):
                logger.debug("claim failed", ["error": "\(e)"])
                if claimsWait { _ = slots.update { $0.claimedWaiting(0) } } else { slots.update { $0.claimed(0, of: asked) } }
                _ = claimDone()
                // The queue is away: try again shortly (the connection reconnects by itself).
                let box = UncheckedBox(self)
                loops[0].execute { _ = box.value.loops[0].schedule(afterNanos: 100_000_000) { box.value.pump() } }
            }
        }
    }

    /// The claim out ended; true if a pump was asked for meanwhile.
    private func claimDone() -> Bool {
        state.withLock { s in
            s.claiming = false
            defer { s.again = false }
            return s.again
        }
    }

    private func pickLoop(_ affinity: ObjectIdentifier?) -> EventLoop {
        if let affinity, let same = loops.first(where: { ObjectIdentifier($0) == affinity }) { return same }
        let i = state.withLock { s -> Int in
            s.nextLoop = (s.nextLoop + 1) % loops.count
            return s.nextLoop
        }
        return loops[i]
    }

    /// Runs one claimed job (its slot was reserved by the claim).
    func run(_ queued: QueuedJob) {
        guard let job = queued.job else {
            logger.error("undecodable job dropped", ["id": queued.id])
            return drop(queued)
        }
        if Int(wallClockNanos() / 1_000_000) > job.ticket.expiresAtMs || job.replyTarget?.isFinished == true {
            // Its gateway stopped waiting for it or its stream ended (cancelled): do not run it.
            return drop(queued)
        }
        let request = job.request
        let key = StreamKey.make(owner: request.ownerID, requestID: request.requestID)
        let loop = pickLoop(job.affinity)
        let box = UncheckedBox(self)
        let begin: @Sendable () -> Void = {
            let me = box.value
            // Events go straight to a stream in this process, or down the link to the gateway
            // (its pings say it is alive: a link stream drops keepalives), or else through the relay.
            var target: RelayTarget? = job.replyTarget
            var linked: LinkedStream?
            let r = WeakRun()
            let stop: @Sendable (Int?) -> Void = { receivers in
                // Only a gateway that is gone (0 receivers) lost its lease with it; a relay that
                // could not be reached (nil) leaves the lease to its living owner.
                if receivers == 0 { box.value.onAbandoned?(request) }
                loop.execute { r.run?.cancel() }
            }
            if target == nil, let links = me.links, let address = job.ticket.link {
                // A link that cannot be opened sends through the relay instead (from the start).
                let relay = me.relay, channel = job.ticket.replyTo
                let once = OnceFlag()
                linked = links.open(address, key: key, loop: loop) { message in
                    relay.publish(channel: channel, message) { n in
                        guard n == nil || n == 0, once.first() else { return }
                        stop(n)
                    }
                }
                target = linked
            }
            let publisher = RelayPublisher(loop: loop, relay: me.relay, channel: job.ticket.replyTo, routingKey: key, worker: me.nodeID,
                                           keepaliveNanos: me.configuration.keepaliveNanos, target: target)
            let run = GenerationRun(request: request, loop: loop, sink: publisher, metrics: me.metrics) { run, event in box.value.ended(run, key: key, event) }
            // The gateway is gone (nobody received an event): stop, freeing the slot and the lease.
            // Weak: the run holds the publisher (its sink); a strong capture here would keep both
            // alive for good once the run ended.
            r.run = run
            publisher.onNobodyListening = stop
            // The link closed or went silent: nobody will hear the rest, and the gateway, gone
            // or cut off, ends the stream on its side.
            linked?.onGone = { stop(0) }
            linked?.onCancel = { r.run?.cancel() }
            me.slots.update { $0.started() }
            me.state.withLock { $0.runs[key] = run }
            me.metrics.activeGenerations.add(1, ordering: .relaxed)
            me.queue.ack(queued.id)
            run.start(backend: me.backend, worker: me.nodeID, createdEpoch: Int(wallClockNanos() / 1_000_000_000))
        }
        // Claimed on the job's loop (a queue in memory answers on the gateway's): start it now,
        // without a wake-up of the loop.
        if loop.inEventLoop { begin() } else { loop.execute(begin) }
    }

    private func drop(_ queued: QueuedJob) {
        queue.ack(queued.id)
        slots.update { $0.dropped() }
    }

    /// A generation ended (its loop): its slot goes to the next job at once.
    private func ended(_ run: GenerationRun, key: String, _ event: CompletionEvent) {
        state.withLock { s in if s.runs[key] === run { s.runs[key] = nil } }
        metrics.activeGenerations.subtract(1, ordering: .relaxed)
        switch event {
        case .done(let reason, _, let timings): metrics.recordFinished(reason, timings: timings)
        case .failed: metrics.completionsError.add(1, ordering: .relaxed)
        default: break
        }
        if slots.update({ $0.finished() }) {
            let box = UncheckedBox(self)
            run.loop.runAfterTick { box.value.pump() }
        }
    }

    /// Stops a running generation (cancel from its gateway), on its loop: never inside a call
    /// of the run itself (an in-memory relay delivers on the publisher's thread).
    private func cancel(key: String) {
        guard let run = state.withLock({ $0.runs[key] }) else { return }
        let box = UncheckedBox(run)
        run.loop.execute { box.value.cancel() }
    }

    private func scheduleReclaim() {
        reclaimTimer = loops[0].schedule(afterNanos: configuration.reclaimEveryNanos) { [weak self] in
            guard let self, !self.state.withLock({ $0.stopped }) else { return }
            self.reclaim()
            self.pump()  // a safety net: claims resume within a second whatever was missed
            self.scheduleReclaim()
        }
    }

    private func reclaim() {
        queue.backlog { [metrics] n in if let n { metrics.jobsBacklog.store(n, ordering: .relaxed) } }
        // Slots a waiting read holds are taken too: else a worker whose read holds them all
        // (most of the time) would never take over a dead worker's jobs.
        let asked = slots.update { $0.reservePreempting(upTo: configuration.claimBatch) }
        guard asked > 0 else { return }
        queue.reclaim(consumer: nodeID, minIdleMs: configuration.reclaimMinIdleMs, max: asked,
                      maxDeliveries: configuration.maxDeliveries) { [self] result in
            guard case .success(let (claimed, dead)) = result else {
                slots.update { $0.claimed(0, of: asked) }
                return pump()
            }
            slots.update { $0.claimed(claimed.count, of: asked) }
            // The slots it held and did not need go back to claiming at once (the timer's pump
            // ran while they were held: without this, a one-slot worker would never claim).
            if claimed.count < asked { pump() }
            for job in claimed {
                metrics.jobsReclaimed.add(1, ordering: .relaxed)
                logger.warning("job taken over from a silent worker", ["id": job.id, "deliveries": "\(job.deliveries)"])
                run(job)
            }
            for job in dead { deadLettered(job) }
        }
    }

    /// Tells the client of a job that failed on too many workers (it is kept in the dead letters).
    private func deadLettered(_ queued: QueuedJob) {
        metrics.jobsDeadLettered.add(1, ordering: .relaxed)
        logger.error("job dead-lettered", ["id": queued.id, "deliveries": "\(queued.deliveries)"])
        guard let job = queued.job else { return }
        let error = APIError(.internalError, "this completion failed on \(queued.deliveries) workers and was given up")
        let key = StreamKey.make(owner: job.request.ownerID, requestID: job.request.requestID)
        relay.publish(channel: job.ticket.replyTo, .event(requestID: key, .failed(error, tokensSoFar: 0), worker: nil)) { _ in }
    }
}

/// A run referred to without keeping it alive (it lives while the worker's registry holds it).
/// True the first time only (any thread).
private final class OnceFlag: Sendable {
    private let done = Atomic<Bool>(false)
    func first() -> Bool { !done.exchange(true, ordering: .relaxed) }
}

private final class WeakRun: @unchecked Sendable {
    weak var run: GenerationRun?
}
