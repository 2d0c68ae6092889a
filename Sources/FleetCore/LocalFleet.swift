import Domain
import Runtime
import Synchronization

/// The fleet's ports in this process's memory: a node on its own (`serve` without Redis,
/// `model-server`) and a fleet node's Redis-down fallback run the same gateway and worker code
/// over it as the fleet does over Redis. Messages stay typed (nothing is encoded); a job is handed
/// to a worker woken by `whenJobArrives` (claims never wait); events are delivered on the
/// publisher's thread, so a worker running a job on its gateway's loop (`FleetJob.affinity`)
/// reaches the client without a hop.
///
/// The registry of the gateway that uses it is its directory (one process, one registry): no
/// locator and no transcript is kept twice.
public final class LocalFleet: JobQueue, JobArrivals, EventRelay, StreamDirectory, @unchecked Sendable {
    /// Jobs waiting for a worker past which enqueue is refused (a job a worker claimed starts on
    /// its loop's next turn at the latest, on a slot it holds: it no longer counts).
    public let maxBacklog: Int

    private struct Queue {
        var waiting: [QueuedJob] = []
        var head = 0
        /// Waiting jobs taken back by their gateway (skipped by claims).
        var withdrawn: Set<String> = []
        var next = 0
        var backlog: Int { waiting.count - head - withdrawn.count }
    }
    private let queue = Mutex(Queue())
    /// Jobs not claimed yet, readable without the lock.
    private let unclaimed = Atomic<Int>(0)
    private let wakers = Mutex<[@Sendable () -> Void]>([])
    private let channels = Mutex<[String: [@Sendable (RelayMessage) -> Void]]>([:])

    public init(maxBacklog: Int) {
        self.maxBacklog = max(1, maxBacklog)
    }

    // MARK: JobQueue

    public func enqueue(_ job: FleetJob, streamKey: String, holder: String, done: @escaping @Sendable (Result<Enqueued, JobQueueError>) -> Void) {
        let result: Result<Enqueued, JobQueueError> = queue.withLock { q in
            guard q.backlog < maxBacklog else { return .failure(.busy(backlog: q.backlog)) }
            q.next += 1
            let id = String(q.next)
            q.waiting.append(QueuedJob(id: id, job: job, deliveries: 0))
            unclaimed.add(1, ordering: .relaxed)
            return .success(.queued(id: id))
        }
        done(result)
        if case .success = result { for wake in wakers.withLock({ $0 }) { wake() } }
    }

    public var hasWaitingJobs: Bool { unclaimed.load(ordering: .relaxed) > 0 }

    public func whenJobArrives(_ wake: @escaping @Sendable () -> Void) {
        wakers.withLock { $0.append(wake) }
    }

    /// Up to `max` waiting jobs, at once (an empty answer never waits: the worker is woken).
    public func claim(consumer: String, max: Int, blockMs: Int, done: @escaping @Sendable (Result<[QueuedJob], JobQueueError>) -> Void) {
        let jobs: [QueuedJob] = queue.withLock { q in
            var out: [QueuedJob] = []
            while q.head < q.waiting.count && out.count < max {
                let j = q.waiting[q.head]
                q.head += 1
                if !q.withdrawn.isEmpty, q.withdrawn.remove(j.id) != nil { continue }
                out.append(QueuedJob(id: j.id, job: j.job, deliveries: 1))
            }
            if !out.isEmpty { unclaimed.subtract(out.count, ordering: .relaxed) }
            if q.head == q.waiting.count {
                q.waiting.removeAll(keepingCapacity: true)
                q.head = 0
            } else if q.head > 1024 && q.head * 2 > q.waiting.count {
                q.waiting.removeFirst(q.head)
                q.head = 0
            }
            return out
        }
        done(.success(jobs))
    }

    public func ack(_ id: String) {}

    /// Takes a job back if no worker claimed it yet (ids are handed out in order: one at or past
    /// the head is still waiting).
    public func withdraw(_ id: String) -> Bool {
        guard let n = Int(id) else { return false }
        return queue.withLock { q in
            guard q.head < q.waiting.count, let first = Int(q.waiting[q.head].id), n >= first, n <= q.next,
                  !q.withdrawn.contains(id) else { return false }
            q.withdrawn.insert(id)
            unclaimed.subtract(1, ordering: .relaxed)
            return true
        }
    }

    public func backlog(done: @escaping @Sendable (Int?) -> Void) { done(queue.withLock { $0.backlog }) }

    /// Jobs waiting for a worker.
    public var length: Int { queue.withLock { $0.backlog } }

    /// A worker in this process cannot go silent on its own: nothing is ever taken over.
    public func reclaim(consumer: String, minIdleMs: Int, max: Int, maxDeliveries: Int,
                        done: @escaping @Sendable (Result<(claimed: [QueuedJob], dead: [QueuedJob]), JobQueueError>) -> Void) {
        done(.success(([], [])))
    }

    // MARK: EventRelay

    public func publish(channel: String, _ message: RelayMessage, done: @escaping @Sendable (Int?) -> Void) {
        let handlers = channels.withLock { $0[channel] ?? [] }
        for h in handlers { h(message) }
        done(handlers.count)
    }

    public func subscribe(channel: String, _ onMessage: @escaping @Sendable (RelayMessage) -> Void) {
        channels.withLock { $0[channel, default: []].append(onMessage) }
    }

    // MARK: StreamDirectory (the gateway's registry is the directory)

    public func lookup(streamKey: String, done: @escaping @Sendable (Result<(holder: String?, transcript: [UInt8]?), JobQueueError>) -> Void) {
        done(.success((nil, nil)))
    }
    public func keepFinished(streamKey: String, transcript: [UInt8], ttlMs: Int) {}
    public func forget(streamKey: String, holder: String) {}
    public func keepLocator(streamKey: String, ttlMs: Int) {}
    public var keepsTranscripts: Bool { false }
}
