import CLinux
import Domain
import Gateway
import NetCore
import Runtime
import Synchronization

public struct WorkerConfiguration: Sendable {
    /// Jobs taken in one claim (never more than free slots).
    public var claimBatch = 32
    /// How long one claim waits for a job.
    public var blockMs = 1000
    /// How often silent workers' jobs are looked for, and the backlog counted.
    public var reclaimEveryNanos: UInt64 = 1_000_000_000
    /// A job delivered to a worker that has not started it for this long is taken over.
    public var reclaimMinIdleMs = 2000
    /// Deliveries after which a job is dead-lettered and its client told.
    public var maxDeliveries = 3
    /// Quiet time after which a running job says "still running" to its gateway.
    public var keepaliveNanos: UInt64 = 500_000_000
    public init() {}
}

/// The worker side of the fleet: pulls jobs from the shared queue only while it has free slots
/// (the least loaded worker wins), runs them on the in-process runner, and publishes each event to
/// the gateway that holds the client. A job is acknowledged once it started (after that, a dead
/// worker shows as silence to the gateway, which ends the stream as interrupted); a job claimed
/// by a worker that died before starting it is taken over by another, and dead-lettered after
/// too many deliveries. Cancels arrive on the worker's own channel. Knows the ports, not Redis.
public final class FleetWorker: @unchecked Sendable {
    public let nodeID: String
    public let channel: String
    let queue: JobQueue
    let relay: EventRelay
    let runner: CompletionScheduler
    let loops: [EventLoop]
    let metrics: Metrics
    let logger: Logger
    let configuration: WorkerConfiguration

    private struct State {
        var claiming = false
        /// Jobs claimed and not yet handed to the runner: their slots are spoken for.
        var reserved = 0
        var stopped = false
        var nextLoop = 0
    }
    private let state = Mutex(State())
    private var reclaimTimer: TimerHandle?

    public init(nodeID: String, queue: JobQueue, relay: EventRelay, runner: CompletionScheduler, loops: [EventLoop],
                metrics: Metrics, logger: Logger, configuration: WorkerConfiguration = WorkerConfiguration()) {
        self.nodeID = nodeID
        channel = FleetChannels.worker(nodeID)
        self.queue = queue
        self.relay = relay
        self.runner = runner
        self.loops = loops
        self.metrics = metrics
        self.logger = logger
        self.configuration = configuration
    }

    public func start() {
        relay.subscribe(channel: channel) { [weak self] bytes in
            guard let self, case .cancel(let id, let owner)? = try? RelayMessage.decode(bytes) else { return }
            self.runner.cancel(requestID: id, owner: owner)
        }
        pump()
        let box = UncheckedBox(self)
        loops[0].execute { box.value.scheduleReclaim() }
    }

    /// Takes no more jobs; the ones running go on (the runner drains them).
    public func stop() {
        state.withLock { $0.stopped = true }
        let box = UncheckedBox(self)
        loops[0].execute { box.value.reclaimTimer?.cancel() }
    }

    private var freeSlots: Int { runner.configuration.slots - runner.inFlight - state.withLock { $0.reserved } }

    /// Claims as many jobs as there are free slots, unless a claim is already waiting.
    func pump() {
        let inFlight = runner.inFlight
        let free: Int = state.withLock { s in
            let free = runner.configuration.slots - inFlight - s.reserved
            guard !s.claiming, !s.stopped, free > 0 else { return 0 }
            s.claiming = true
            return free
        }
        guard free > 0 else { return }
        queue.claim(consumer: nodeID, max: min(free, configuration.claimBatch), blockMs: configuration.blockMs) { [self] result in
            switch result {
            case .success(let jobs):
                if !jobs.isEmpty { logger.debug("jobs claimed", ["count": "\(jobs.count)"]) }
                state.withLock { s in
                    s.claiming = false
                    s.reserved += jobs.count
                }
                for job in jobs { run(job) }
                pump()
            case .failure(let e):
                logger.debug("claim failed", ["error": "\(e)"])
                state.withLock { $0.claiming = false }
                // Redis is away: try again shortly (the connection reconnects by itself).
                let box = UncheckedBox(self)
                loops[0].execute { _ = box.value.loops[0].schedule(afterNanos: 100_000_000) { box.value.pump() } }
            }
        }
    }

    private func pickLoop() -> EventLoop {
        let i = state.withLock { s -> Int in
            s.nextLoop = (s.nextLoop + 1) % loops.count
            return s.nextLoop
        }
        return loops[i]
    }

    /// Runs one claimed job (its slot was reserved by the claim).
    func run(_ queued: QueuedJob) {
        let unreserve: @Sendable () -> Void = { [self] in state.withLock { $0.reserved -= 1 } }
        guard let (decoded, job) = try? CompletionWire.decodeJob(queued.payload) else {
            logger.error("undecodable job dropped", ["id": queued.id, "bytes": "\(queued.payload.count)"])
            queue.ack(queued.id)
            unreserve()
            return
        }
        if Int(clinux_realtime_ns() / 1_000_000) > job.expiresAtMs {
            // Its gateway stopped waiting for it (and told its client): do not run it.
            queue.ack(queued.id)
            unreserve()
            return
        }
        var one = decoded
        one.clientSuppliedID = false  // the gateway owns attach; here each job runs once
        let request = one
        let loop = pickLoop()
        let box = UncheckedBox(self)
        loop.execute {
            let me = box.value
            let publisher = RelayPublisher(loop: loop, relay: me.relay, channel: job.replyTo,
                                           routingKey: StreamKey.make(owner: request.ownerID, requestID: request.requestID),
                                           worker: me.nodeID, keepaliveNanos: me.configuration.keepaliveNanos)
            // The gateway is gone (nobody received an event): stop, freeing the slot and the lease.
            publisher.onNobodyListening = { box.value.runner.cancel(requestID: request.requestID, owner: request.ownerID) }
            // The runner frees the slot right after the final event is delivered: claim then.
            publisher.onEnd = { loop.runAfterTick { box.value.pump() } }
            let submitted = me.runner.submit(request, subscriber: publisher)
            unreserve()
            if case .failure(let e) = submitted { publisher.receive(.failed(e, tokensSoFar: 0)) }
            me.queue.ack(queued.id)
        }
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
        let free = max(1, freeSlots)
        queue.reclaim(consumer: nodeID, minIdleMs: configuration.reclaimMinIdleMs, max: min(free, configuration.claimBatch),
                      maxDeliveries: configuration.maxDeliveries) { [self] result in
            guard case .success(let (claimed, dead)) = result else { return }
            state.withLock { $0.reserved += claimed.count }
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
        guard let (request, job) = try? CompletionWire.decodeJob(queued.payload) else { return }
        let error = APIError(.internalError, "this completion failed on \(queued.deliveries) workers and was given up")
        let key = StreamKey.make(owner: request.ownerID, requestID: request.requestID)
        relay.publish(channel: job.replyTo, RelayMessage.event(requestID: key, .failed(error, tokensSoFar: 0), worker: nil).bytes) { _ in }
    }
}
