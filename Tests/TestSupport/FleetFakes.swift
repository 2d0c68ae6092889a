import Dispatch
import Domain
import FleetCore
import NetCore
import Runtime
import Synchronization

/// Fakes of the fleet's ports, for tests that play one side (a worker that dies, a message lost,
/// a gateway gone). They deliver asynchronously, like Redis does.

/// The queue port in memory: FIFO, claims that wait, locators and transcripts, a bounded backlog,
/// and entries that cannot be read (`enqueueUnreadable`).
public final class FakeQueue: JobQueue, StreamDirectory, @unchecked Sendable {
    struct Entry { var id: String; var job: FleetJob?; var consumer: String?; var deliveries: Int }
    private struct State {
        var entries: [Entry] = []
        var next = 0
        var waiters: [(consumer: String, max: Int, done: @Sendable (Result<[QueuedJob], JobQueueError>) -> Void)] = []
        var holders: [String: String] = [:]
        var transcripts: [String: [UInt8]] = [:]
    }
    private let state = Mutex(State())
    let maxBacklog: Int
    private let delivery = DispatchQueueLite()
    public init(maxBacklog: Int = 100) { self.maxBacklog = maxBacklog }

    /// Entries not acknowledged.
    public var length: Int { state.withLock { $0.entries.count } }

    public func enqueue(_ job: FleetJob, streamKey: String, holder: String, done: @escaping @Sendable (Result<Enqueued, JobQueueError>) -> Void) {
        add(job, streamKey: streamKey, holder: holder, done: done)
    }

    /// An entry no worker can read (it must be dropped, not run).
    public func enqueueUnreadable(streamKey: String) {
        add(nil, streamKey: streamKey, holder: "gw") { _ in }
    }

    private func add(_ job: FleetJob?, streamKey: String, holder: String, done: @escaping @Sendable (Result<Enqueued, JobQueueError>) -> Void) {
        typealias Wake = (@Sendable (Result<[QueuedJob], JobQueueError>) -> Void, QueuedJob)
        let (result, wake): (Result<Enqueued, JobQueueError>, [Wake]) = state.withLock { s in
            if let h = s.holders[streamKey] { return (.success(.duplicate(holder: h)), []) }
            if s.entries.count >= maxBacklog { return (.failure(.busy(backlog: s.entries.count)), []) }
            s.next += 1
            let id = "\(s.next)-0"
            s.holders[streamKey] = holder
            var e = Entry(id: id, job: job, consumer: nil, deliveries: 0)
            var wake: [Wake] = []
            if !s.waiters.isEmpty {
                let w = s.waiters.removeFirst()
                e.consumer = w.consumer
                e.deliveries = 1
                wake.append((w.done, QueuedJob(id: id, job: job, deliveries: 1)))
            }
            s.entries.append(e)
            return (.success(.queued(id: id)), wake)
        }
        delivery.async {
            done(result)
            for (w, job) in wake { w(.success([job])) }
        }
    }

    public func claim(consumer: String, max: Int, blockMs: Int, done: @escaping @Sendable (Result<[QueuedJob], JobQueueError>) -> Void) {
        let jobs: [QueuedJob]? = state.withLock { s in
            var out: [QueuedJob] = []
            for i in s.entries.indices where s.entries[i].consumer == nil && out.count < max {
                s.entries[i].consumer = consumer
                s.entries[i].deliveries += 1
                out.append(QueuedJob(id: s.entries[i].id, job: s.entries[i].job, deliveries: s.entries[i].deliveries))
            }
            if out.isEmpty && blockMs > 0 {
                s.waiters.append((consumer, max, done))
                return nil
            }
            return out
        }
        if let jobs { delivery.async { done(.success(jobs)) } }
    }

    public func ack(_ id: String) { state.withLock { $0.entries.removeAll { $0.id == id } } }
    public func backlog(done: @escaping @Sendable (Int?) -> Void) { done(length) }
    public func reclaim(consumer: String, minIdleMs: Int, max: Int, maxDeliveries: Int,
                        done: @escaping @Sendable (Result<(claimed: [QueuedJob], dead: [QueuedJob]), JobQueueError>) -> Void) {
        done(.success(([], [])))
    }
    public func lookup(streamKey: String, done: @escaping @Sendable (Result<(holder: String?, transcript: [UInt8]?), JobQueueError>) -> Void) {
        let r = state.withLock { ($0.holders[streamKey], $0.transcripts[streamKey]) }
        done(.success(r))
    }
    public func keepFinished(streamKey: String, transcript: [UInt8], ttlMs: Int) { state.withLock { $0.transcripts[streamKey] = transcript } }
    public func forget(streamKey: String, holder: String) {
        state.withLock { s in if s.holders[streamKey] == holder { s.holders[streamKey] = nil } }
    }
    public func keepLocator(streamKey: String, ttlMs: Int) {}
}

/// The relay port in memory, recording what was published: one ordered delivery queue, like one
/// Redis connection.
public final class FakeRelay: EventRelay, @unchecked Sendable {
    private let handlers = Mutex<[String: [@Sendable (RelayMessage) -> Void]]>([:])
    private let published = Mutex<[(String, RelayMessage)]>([])
    private let delivery = DispatchQueueLite()
    public init() {}

    public func publish(channel: String, _ message: RelayMessage, done: @escaping @Sendable (Int?) -> Void) {
        published.withLock { $0.append((channel, message)) }
        let hs = handlers.withLock { $0[channel] ?? [] }
        delivery.async {
            for h in hs { h(message) }
            done(hs.count)
        }
    }
    public func subscribe(channel: String, _ onMessage: @escaping @Sendable (RelayMessage) -> Void) {
        handlers.withLock { $0[channel, default: []].append(onMessage) }
    }
    /// The channel's subscribers go away (a node died).
    public func unsubscribeAll(_ channel: String) { handlers.withLock { $0[channel] = nil } }
    public func messages(to channel: String) -> [RelayMessage] {
        published.withLock { $0.filter { $0.0 == channel }.map(\.1) }
    }
}

/// Runs closures in order on one thread of its own (the fakes' "network").
final class DispatchQueueLite: Sendable {
    private let queue = DispatchQueue(label: "fake-delivery")
    func async(_ body: @escaping @Sendable () -> Void) { queue.async(execute: body) }
}

/// A subscriber that records a completion's events (as "accepted", "delta", "done:<reason>",
/// "error:<code>") on its loop.
public final class Recorder: CompletionSubscriber, @unchecked Sendable {
    public let loop: EventLoop
    public let events = Mutex<[CompletionEvent]>([])
    public init(_ loop: EventLoop) { self.loop = loop }
    public func receive(_ event: CompletionEvent) { events.withLock { $0.append(event) } }
    public var kinds: [String] {
        events.withLock { $0.map { e in
            switch e {
            case .accepted: return "accepted"
            case .delta: return "delta"
            case .done(let r, _, _): return "done:\(r.rawValue)"
            case .failed(let e, _): return "error:\(e.code.rawValue)"
            }
        } }
    }
    public var last: String? { kinds.last }
    public var ended: Bool { last.map { $0.hasPrefix("done") || $0.hasPrefix("error") } ?? false }
    public var text: String {
        events.withLock { $0.map { if case .delta(_, let t, _) = $0 { return t } else { return "" } }.joined() }
    }
}

/// Polls `cond` every 5 ms until it holds or `timeout` seconds pass.
public func waitUntil(_ cond: () -> Bool, timeout: Double = 5) async {
    let end = monotonicNanos() + UInt64(timeout * 1e9)
    while !cond() && monotonicNanos() < end { try? await Task.sleep(nanoseconds: 5_000_000) }
}
