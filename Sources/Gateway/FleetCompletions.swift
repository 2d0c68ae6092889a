import Domain
import FleetCore
import JSON
import NetCore
import Runtime
import Synchronization

public struct FleetConfiguration: Sendable {
    /// How long a job may wait for a worker before its client gets `server_busy`.
    public var queueWaitNanos: UInt64 = 30_000_000_000
    /// How long a job may wait while the fleet has no live worker (then `server_busy`; the
    /// deadline sweep runs every `watchNanos`, so the client hears within this plus that).
    public var noWorkerWaitNanos: UInt64 = 400_000_000
    /// A running stream whose worker said nothing (no token, no keepalive) this long is
    /// interrupted: the worker died.
    public var silenceNanos: UInt64 = 2_000_000_000
    /// How often each stream checks the two deadlines above.
    public var watchNanos: UInt64 = 500_000_000
    /// Keepalive interval of streams this gateway forwards to another gateway.
    public var keepaliveNanos: UInt64 = 500_000_000
    /// Finished streams are kept this long for attach and replay (here and in Redis).
    public var retentionNanos: UInt64 = 120_000_000_000
    public var maxRetained = 20_000
    /// Transcripts larger than this are not kept in Redis (attach elsewhere then finds none).
    public var maxTranscriptBytes = 256 * 1024
    public init() {}
}

/// A queue and a relay that workers pull from and answer on: the fleet's (Redis), or this
/// process's memory (`LocalFleet`).
public struct FleetLane: Sendable {
    public let queue: JobQueue
    public let relay: EventRelay
    /// Whether the queue and relay can be reached now.
    public let isUp: @Sendable () -> Bool
    /// Whether its workers run in other processes: their silence then means they died.
    public let remote: Bool

    /// Whether any worker pulls from it now (false: a job would only wait, so it is refused at once).
    public let hasWorkers: @Sendable () -> Bool

    public init(queue: JobQueue, relay: EventRelay, remote: Bool, isUp: @escaping @Sendable () -> Bool,
                hasWorkers: @escaping @Sendable () -> Bool = { true }) {
        self.queue = queue
        self.relay = relay
        self.remote = remote
        self.isUp = isUp
        self.hasWorkers = hasWorkers
    }

    /// Workers in this process, through memory.
    public static func local(_ fleet: LocalFleet) -> FleetLane {
        FleetLane(queue: fleet, relay: fleet, remote: false, isUp: { true })
    }
}

/// The completion engine's gateway side, the only one there is: every completion becomes a job on
/// a lane's queue, and its events come back on this gateway's relay channel, to a `FleetStream`
/// that owns the subscribers, the replay, the deadlines and the lease (admitted by the API,
/// renewed and released here, nowhere else). Cancels go to the worker running it; a request_id
/// held by another gateway is cancelled or followed there. A node on its own uses one lane in
/// memory; a fleet node uses Redis's, and a serve node this process's memory as its fallback
/// while Redis is away. Knows the ports, not Redis.
///
/// Thread rules: the registry is behind one mutex (one short lock per message); a stream's state
/// belongs to its loop.
public final class FleetCompletions: CompletionService, @unchecked Sendable {
    public let nodeID: String
    public let channel: String
    /// The fleet's lane first; then the fallback, if any (a job goes there when the first cannot
    /// be reached; without one, the client gets server_busy at once).
    let lanes: [FleetLane]
    let directory: StreamDirectory
    let metrics: Metrics
    let logger: Logger
    let configuration: FleetConfiguration
    /// Leases of admitted requests: renewed while their stream lives, released however it ends.
    public var admission: Admission?
    /// Where this gateway takes stream links (`LinkServer`): put in each job for the fleet, so
    /// its worker streams the events there. nil: the relay carries them.
    /// Whether this node's own worker side has room now (a serve node runs the job itself then).
    public var localFirst: (@Sendable () -> Bool)?
    /// The maker of a request_id this fleet's gateways made up (nil: not one of those): another
    /// gateway reaches a stream by it with no locator in Redis.
    public var idMaker: (@Sendable (String) -> String?)? = { RequestIDs.maker(of: $0) }

    public var linkAddress: CompletionWire.LinkAddress? {
        get { link.withLock { $0 } }
        set { link.withLock { $0 = newValue } }
    }
    private let link = Mutex<CompletionWire.LinkAddress?>(nil)

    private struct State {
        var streams: [String: FleetStream] = [:]
        var finished: [(key: String, at: UInt64)] = []
        var finishedHead = 0
        var draining = false
    }
    private let state = Mutex(State())
    private let live = Atomic<Int>(0)
    private let idle = IdleSignal()
    private let watches = Mutex<[ObjectIdentifier: StreamWatch]>([:])

    /// The deadline sweeper of `loop` (one per loop).
    private func watch(on loop: EventLoop) -> StreamWatch {
        watches.withLock { w in
            if let existing = w[ObjectIdentifier(loop)] { return existing }
            let made = StreamWatch(loop: loop, every: configuration.watchNanos)
            w[ObjectIdentifier(loop)] = made
            return made
        }
    }

    public init(nodeID: String, lane: FleetLane, fallback: FleetLane? = nil, directory: StreamDirectory, metrics: Metrics, logger: Logger,
                configuration: FleetConfiguration = FleetConfiguration()) {
        self.nodeID = nodeID
        channel = FleetChannels.gateway(nodeID)
        lanes = [lane] + (fallback.map { [$0] } ?? [])
        self.directory = directory
        self.metrics = metrics
        self.logger = logger
        self.configuration = configuration
    }

    /// A node on its own: one lane in this process's memory, which is also its directory.
    public convenience init(nodeID: String, local: LocalFleet, metrics: Metrics, logger: Logger, configuration: FleetConfiguration = FleetConfiguration()) {
        self.init(nodeID: nodeID, lane: .local(local), directory: local, metrics: metrics, logger: logger, configuration: configuration)
    }

    private var relay: EventRelay { lanes[0].relay }

    /// Listens on this gateway's channel on every lane (re-subscribed by the relay after reconnects).
    public func start() {
        for (i, lane) in lanes.enumerated() {
            lane.relay.subscribe(channel: channel) { [weak self] message in self?.received(message, lane: i) }
            // Cancels and follows for the ids this process made up, sent by gateways that hold no
            // locator for them.
            if lane.remote {
                lane.relay.subscribe(channel: FleetChannels.gateway(RequestIDs.maker)) { [weak self] message in self?.received(message, lane: i) }
            }
        }
    }

    // MARK: CompletionService

    public func submit(_ request: CompletionRequest, subscriber: CompletionSubscriber) -> Result<CompletionStream, APIError> {
        let key = StreamKey.make(owner: request.ownerID, requestID: request.requestID)
        enum Outcome { case attach(FleetStream), start(FleetStream), replay(FleetStream), refused(APIError) }
        let up = lanes[0].isUp()
        let canRun = up || lanes.count > 1
        let outcome: Outcome = state.withLock { s in
            if let existing = s.streams[key] {
                if request.clientSuppliedID { return .attach(existing) }
                return .refused(APIError(.conflict, "request_id is in use", field: "request_id"))
            }
            if s.draining { return .refused(APIError(.serverBusy, "this node is shutting down; retry on another", retryAfterMs: 100)) }
            guard canRun else {
                return .refused(APIError(.serverBusy, "the job queue cannot be reached; retry shortly", retryAfterMs: 1000))
            }
            let stream = FleetStream(key: key, request: request, loop: subscriber.loop, hub: self)
            s.streams[key] = stream
            return request.replayOnly ? .replay(stream) : .start(stream)
        }
        switch outcome {
        case .refused(let e):
            metrics.completionsBusy.add(1, ordering: .relaxed)
            return .failure(e)
        case .attach(let stream):
            stream.attachFromAnyLoop(subscriber)
            return .success(stream)
        case .replay(let stream):
            // It ran already (admission says so): its result is replayed from wherever it is
            // kept, or the id is refused; a second run is never started.
            stream.ownsLease = false
            live.add(1, ordering: .relaxed)
            metrics.activeGenerations.add(1, ordering: .relaxed)
            stream.attach(subscriber)
            watch(on: stream.loop).add(stream)
            follow(stream, holder: nil)
            return .success(stream)
        case .start(let stream):
            live.add(1, ordering: .relaxed)
            metrics.activeGenerations.add(1, ordering: .relaxed)
            metrics.queueLength.add(1, ordering: .relaxed)
            stream.countedAsQueued = true
            stream.attach(subscriber)
            watch(on: stream.loop).add(stream)
            // Local first: a serve node with a free slot runs it on its own worker side (no
            // queue round trip, no relay); else on the fleet's queue for any worker; with Redis
            // away, itself (the README's Redis-down policy).
            let local = lanes.count > 1 && (!up || localFirst?() == true)
            if local && up {
                // Findable by request_id from other gateways (attach, cancel): a client's id gets
                // a locator; one this node made names its maker (`RequestIDs.maker`).
                if request.clientSuppliedID {
                    directory.hold(streamKey: key, holder: nodeID)
                    stream.hasLocator = true
                }
            }
            enqueue(stream, lane: local ? 1 : 0)
            return .success(stream)
        }
    }

    /// Puts the stream's job on lane `lane`'s queue; one that cannot be reached hands it to the
    /// next lane, if there is one.
    func enqueue(_ stream: FleetStream, lane: Int) {
        stream.lane = lane
        let request = stream.request
        let expires = Int(wallClockNanos() / 1_000_000) + Int(configuration.queueWaitNanos / 1_000_000)
        // A worker in this process runs it on the stream's loop and hands it the events directly.
        let local = !lanes[lane].remote
        let job = FleetJob(request: request, ticket: .init(replyTo: channel, expiresAtMs: expires, link: local ? nil : linkAddress),
                           affinity: local ? ObjectIdentifier(stream.loop) : nil, replyTarget: local ? stream : nil)
        let box = UncheckedBox(stream)
        lanes[lane].queue.enqueue(job, streamKey: stream.key, holder: nodeID) { [self] result in
            let settle: @Sendable () -> Void = { [self] in
                let stream = box.value
                switch result {
                case .success(.queued(let id)):
                    stream.queueID = id
                    if lanes[lane].remote { stream.hasLocator = true }
                    stream.enqueued()
                case .success(.duplicate(let holder)):
                    // The request_id has a stream already (a retry through another gateway): this
                    // one only relays it and holds no lease of its own.
                    stream.ownsLease = false
                    follow(stream, holder: holder)
                case .failure(.busy(let backlog)):
                    // Unless an earlier lane took it (Redis, before the fallback): it may run there.
                    stream.neverQueued = stream.queueID == nil
                    let message = lanes[lane].remote ? "the fleet's queue is full (\(backlog) jobs waiting)"
                        : "all worker slots are busy and the queue is full"
                    stream.fail(APIError(.serverBusy, message, retryAfterMs: 1000), tellWorker: false)
                case .failure(.unavailable):
                    if lane + 1 < lanes.count {
                        enqueue(stream, lane: lane + 1)
                    } else {
                        stream.fail(APIError(.serverBusy, "the job queue cannot be reached; retry shortly", retryAfterMs: 1000), tellWorker: false)
                    }
                }
            }
            // A queue in memory answers at once, on this loop: no hop.
            if box.value.loop.inEventLoop { settle() } else { box.value.loop.execute(settle) }
        }
    }

    /// Relays a stream that another gateway holds: replays its transcript if it finished, else
    /// asks the holder (`holder`, or the one the directory names) to forward its events here
    /// (stream loop). With neither, the id is refused: it is never run twice.
    private func follow(_ stream: FleetStream, holder knownHolder: String?) {
        let box = UncheckedBox(stream)
        directory.lookup(streamKey: stream.key) { [self] result in
            box.value.loop.execute { [self] in
                let stream = box.value
                switch result {
                case .success((_, let transcript?)):
                    stream.replay(transcript)
                case .success((let found, nil)):
                    guard let holder = knownHolder ?? found ?? idMaker?(stream.request.requestID), holder != nodeID, holder != RequestIDs.maker else {
                        return stream.fail(APIError.requestIDUsed, tellWorker: false)
                    }
                    stream.following()
                    relay.publish(channel: FleetChannels.gateway(holder), .follow(requestID: stream.key, replyTo: channel)) { n in
                        guard n == nil || n == 0 else { return }
                        box.value.loop.execute {
                            box.value.fail(APIError(.generationInterrupted, "the gateway relaying this request_id is gone", retryAfterMs: 100),
                                           tellWorker: false)
                        }
                    }
                case .failure:
                    stream.fail(APIError(.serverBusy, "the job queue cannot be reached; retry shortly", retryAfterMs: 1000), tellWorker: false)
                }
            }
        }
    }

    public func cancel(requestID: String, owner: String, done: @escaping @Sendable (CancelOutcome) -> Void) {
        let key = StreamKey.make(owner: owner, requestID: requestID)
        if let stream = state.withLock({ $0.streams[key] }) {
            let box = UncheckedBox(stream)
            stream.loop.execute { done(box.value.cancel() ? .cancelled : .alreadyFinished) }
            return
        }
        // Not relayed here: find the gateway that holds it.
        directory.lookup(streamKey: key) { [self] result in
            switch result {
            case .success((_, _?)): done(.alreadyFinished)
            case .success((let holder?, nil)) where holder != nodeID:
                relay.publish(channel: FleetChannels.gateway(holder), .cancel(requestID: key, owner: owner)) { n in
                    done((n ?? 0) > 0 ? .cancelled : .notFound)
                }
            case .success((nil, nil)):
                // No locator: an id another gateway made up names that gateway.
                guard let maker = idMaker?(requestID), maker != RequestIDs.maker, lanes[0].remote else { return done(.notFound) }
                relay.publish(channel: FleetChannels.gateway(maker), .cancel(requestID: key, owner: owner)) { n in
                    done((n ?? 0) > 0 ? .cancelled : .notFound)
                }
            default: done(.notFound)
            }
        }
    }

    @discardableResult
    public func cancelAll(keyID: Int64) -> Int {
        // Finished streams kept for replay are not stopped again (nor counted).
        let hit = state.withLock { s in s.streams.values.filter { $0.request.keyID == keyID && !$0.isFinished } }
        for stream in hit {
            let box = UncheckedBox(stream)
            stream.loop.execute { _ = box.value.cancel() }
        }
        return hit.count
    }

    public func beginDraining() { state.withLock { $0.draining = true } }

    /// Calls `body` once no completion is left (at once if none is).
    public func whenIdle(_ body: @escaping @Sendable () -> Void) {
        idle.whenIdle({ live.load(ordering: .sequentiallyConsistent) == 0 }, body)
    }
    public var isDraining: Bool { state.withLock { $0.draining } }
    /// Whether a new completion could run now: a lane that can be reached and has workers.
    public var hasCapacity: Bool { lanes.count > 1 || (lanes[0].isUp() && lanes[0].hasWorkers()) }
    public var inFlight: Int { live.load(ordering: .relaxed) }

    // MARK: relay messages (any thread)

    func received(_ message: RelayMessage, lane: Int) {
        let key: String
        switch message {
        case .event(let k, _, _), .keepalive(let k), .abort(let k), .cancel(let k, _), .follow(let k, _): key = k
        }
        guard let stream = state.withLock({ $0.streams[key] }) else {
            // A worker started a job nobody waits for any more (its stream ended and was forgotten).
            if case .event(_, .accepted, let worker?) = message { tellWorkerToStop(key: key, worker: worker, lane: lane) }
            // Asked to forward a stream this gateway no longer has: say so at once (the asker
            // keeps nothing of a failed relay, and its client learns the id is spent).
            if case .follow(_, let replyTo) = message {
                let gone = RelayMessage.event(requestID: key, .failed(APIError.requestIDUsed, tokensSoFar: 0), worker: nil)
                lanes[lane].relay.publish(channel: replyTo, gone) { _ in }
            }
            return
        }
        if stream.loop.inEventLoop { return stream.handle(message, from: lane) }
        let box = UncheckedBox(stream)
        stream.loop.execute { box.value.handle(message, from: lane) }
    }

    /// The stream a worker's link names by its key (nil: not relayed here).
    func streamForLink(key: String) -> FleetStream? { state.withLock { $0.streams[key] } }

    func tellWorkerToStop(key: String, worker: String, lane: Int) {
        guard let (owner, id) = StreamKey.parse(key) else { return }
        lanes[lane].relay.publish(channel: FleetChannels.worker(worker), .cancel(requestID: id, owner: owner)) { _ in }
    }

    /// Forwards a stream's events to another gateway that attached to it.
    func forward(_ stream: FleetStream, to channel: String) {
        let publisher = RelayPublisher(loop: stream.loop, relay: relay, channel: channel, routingKey: stream.key, worker: nil,
                                       keepaliveNanos: configuration.keepaliveNanos)
        // Weak: the publisher holds this closure; a strong capture of itself would never be freed.
        let s = UncheckedBox(stream), p = WeakSubscriber(publisher)
        publisher.onNobodyListening = { _ in s.value.loop.execute { if let gone = p.subscriber { s.value.detach(gone) } } }
        stream.attach(publisher)
    }

    // MARK: a stream ended (its loop)

    func ended(_ stream: FleetStream, _ event: CompletionEvent, transcript: [UInt8]?) {
        // Sequentially consistent with IdleSignal's own count: a waiter added now is never missed.
        if live.subtract(1, ordering: .sequentiallyConsistent).newValue == 0 { idle.fire() }
        metrics.activeGenerations.subtract(1, ordering: .relaxed)
        switch event {
        case .done(let reason, let usage, let timings):
            metrics.recordFinished(reason, timings: timings)
            if logger.level <= .info {
                let ms = { (v: Double) in "\((v * 10).rounded() / 10)" }
                logger.info("completion finished", [
                    "request_id": stream.request.requestID, "finish_reason": reason.rawValue, "completion_tokens": "\(usage.completionTokens)",
                    "queue_ms": ms(timings.queueMs), "ttft_ms": timings.ttftMs.map(ms) ?? "-", "total_ms": ms(timings.totalMs),
                    "upstream": timings.upstream,
                ])
            }
        case .failed(let e, _) where e.code == .serverBusy && stream.neverStarted:
            // Refused for want of room (queue full, no worker in time, draining): busy, not an error.
            metrics.completionsBusy.add(1, ordering: .relaxed)
        case .failed(let e, _):
            metrics.completionsError.add(1, ordering: .relaxed)
            logger.warning("completion failed", ["request_id": stream.request.requestID, "code": e.code.rawValue, "error": e.message])
        default: break
        }
        // Refused as busy before any worker took it: the admission is taken back (no quota used)
        // and nothing is kept, so the same request_id can be retried at once, here or elsewhere.
        // Only a refusal that left nothing on any queue (a full backlog) is taken back: a job that
        // may be queued (an enqueue whose answer was lost, a wait that timed out) may still run.
        if stream.ownsLease, stream.neverQueued, case .failed(let e, _) = event, e.code == .serverBusy {
            if stream.request.fence != 0 {
                admission?.unadmit(user: stream.request.ownerID, requestID: stream.request.requestID, fence: stream.request.fence)
            }
            if stream.hasLocator { directory.forget(streamKey: stream.key, holder: nodeID) }
            state.withLock { s in if s.streams[stream.key] === stream { s.streams[stream.key] = nil } }
            return
        }
        // A relay of another gateway's stream that failed (refused there, lost, interrupted)
        // keeps nothing: the next attempt asks the holder again instead of replaying a refusal.
        if !stream.ownsLease, case .failed = event {
            state.withLock { s in if s.streams[stream.key] === stream { s.streams[stream.key] = nil } }
            return
        }
        if stream.ownsLease, stream.request.fence != 0 {
            admission?.release(user: stream.request.ownerID, requestID: stream.request.requestID)
        }
        // Replay on another gateway is for request_ids the client chose (it can only ask again
        // by them); the rest are replayed by this gateway alone, which keeps Redis's keys bounded
        // by the streams running plus those with the client's id in the last retention window.
        // A client's id whose transcript is too large keeps its locator all the same: the id is
        // taken until then, and another gateway asks this one to replay it from memory.
        if stream.ownsLease {
            let ttlMs = Int(configuration.retentionNanos / 1_000_000)
            if let transcript, transcript.count <= configuration.maxTranscriptBytes {
                directory.keepFinished(streamKey: stream.key, transcript: transcript, ttlMs: ttlMs)
            } else if stream.request.clientSuppliedID {
                directory.keepLocator(streamKey: stream.key, ttlMs: ttlMs)
            } else if stream.hasLocator {
                directory.forget(streamKey: stream.key, holder: nodeID)
            }
        }
        let now = monotonicNanos()
        state.withLock { s in
            s.finished.append((stream.key, now))
            while s.finishedHead < s.finished.count {
                let (key, at) = s.finished[s.finishedHead]
                guard now - at > configuration.retentionNanos || s.finished.count - s.finishedHead > configuration.maxRetained else { break }
                if let old = s.streams[key], old.isFinished { s.streams[key] = nil }
                s.finishedHead += 1
            }
            if s.finishedHead > 4096 && s.finishedHead * 2 > s.finished.count {
                s.finished.removeFirst(s.finishedHead)
                s.finishedHead = 0
            }
        }
    }
}

/// A subscriber referred to without keeping it alive.
private final class WeakSubscriber: @unchecked Sendable {
    weak var subscriber: RelayPublisher?
    init(_ s: RelayPublisher) { subscriber = s }
}
