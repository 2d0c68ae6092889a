import Domain
import FleetCore
import JSON
import NetCore
import Runtime
import Synchronization

/// One completion as a gateway relays it from the fleet (Redis or this process's memory): the
/// subscribers, what was streamed (for replay), the worker running it, the lease (renewed while it
/// lives) and two deadlines (a job no worker takes; a worker gone silent). `accepted` and the
/// client's timings are made here and nowhere else. Everything but `isFinished` is confined to
/// `loop`.
final class FleetStream: CompletionStream, RelayTarget, @unchecked Sendable {
    let key: String
    let request: CompletionRequest
    let loop: EventLoop
    // Strong: the hub outlives its streams (it forgets finished ones after retention).
    let hub: FleetCompletions
    let createdEpoch = Int(wallClockNanos() / 1_000_000_000)
    /// False for a stream that relays another gateway's (its lease is not ours to release).
    var ownsLease = true

    /// The lane (`FleetCompletions.lanes`) its job went to: the fleet's, or this process's
    /// fallback. Events from the other lane are not its own.
    var lane = 0

    /// Listeners one running generation accepts (attach by request_id): a bound on the fan-out a
    /// client can cause by attaching again and again.
    static let maxSubscribers = 32

    /// Its progress and deadlines (pure; this class carries out what it decides).
    private var state: StreamState
    /// Counted in the queue-length gauge (until a worker takes it or it ends).
    var countedAsQueued = false
    private let finishedFlag = Atomic<Bool>(false)
    private var worker: String?
    /// The link its worker streams on, if it does (cancels go down it; its loss interrupts).
    private var link: StreamLinkHandle?
    /// What was streamed, for replay: each delta's text and forwarded chunk.
    private var pieces: [(text: String, chunk: String?)] = []
    private var final: CompletionEvent?
    private var subscribers: [CompletionSubscriber] = []

    init(key: String, request: CompletionRequest, loop: EventLoop, hub: FleetCompletions) {
        self.key = key
        self.request = request
        self.loop = loop
        self.hub = hub
        let c = hub.configuration
        let renew = request.fence != 0 ? hub.admission.map { max($0.leaseTTLNanos / 3, 1_000_000) } ?? 0 : 0
        state = StreamState(created: monotonicNanos(),
                            limits: .init(queueWaitNanos: c.queueWaitNanos, silenceNanos: c.silenceNanos, renewEveryNanos: renew))
    }

    var isFinished: Bool { finishedFlag.load(ordering: .acquiring) }
    /// No worker ever took it: a refusal before any work.
    var neverStarted: Bool { worker == nil && state.started == nil }
    /// On no queue, so nothing can run it: refused outright by every queue it went to (backlog
    /// full), or taken back from the queue before a worker claimed it.
    var neverQueued = false
    /// Its entry on its lane's queue (taken back if the stream ends before a worker claims it).
    var queueID: String?
    /// A locator in the fleet's directory names this gateway (dropped or kept when it ends).
    var hasLocator = false

    // MARK: subscribers

    func attach(_ s: CompletionSubscriber) {
        if final == nil && subscribers.count >= FleetStream.maxSubscribers {
            s.receive(.failed(APIError(.invalidRequest, "too many clients are attached to this request_id (at most \(FleetStream.maxSubscribers))",
                                       field: "request_id"), tokensSoFar: 0))
            return
        }
        if state.phase == .enqueueing { return subscribers.append(s) }
        s.receive(accepted)
        for (i, p) in pieces.enumerated() { s.receive(.delta(index: i, text: p.text, chunk: p.chunk)) }
        if let final { s.receive(final) } else { subscribers.append(s) }
    }

    private var accepted: CompletionEvent { .accepted(requestID: request.requestID, model: request.parameters.model, created: createdEpoch) }

    /// The job is on the queue (or runs here): its subscribers learn it was accepted.
    func enqueued() {
        guard state.enqueued() else { return }
        for s in subscribers { s.receive(accepted) }
    }

    /// Attaches a subscriber that lives on another loop (events hop to it).
    func attachFromAnyLoop(_ s: CompletionSubscriber) {
        if s.loop === loop { return attach(s) }
        let hop = UncheckedBox(ForeignSubscriber(target: s, streamLoop: loop))
        loop.execute { [self] in attach(hop.value) }
    }

    func detach(_ s: CompletionSubscriber) {
        if loop === s.loop {
            detachMatching { $0 === s }
        } else {
            let box = UncheckedBox(s)
            loop.execute { [self] in detachMatching { $0 === box.value || ($0 as? ForeignSubscriber)?.target === box.value } }
        }
    }

    private func detachMatching(_ match: (CompletionSubscriber) -> Bool) {
        let before = subscribers.count
        subscribers.removeAll(where: match)
        // Nobody listens any more: stop the generation so its slot and lease go to someone else.
        if before > 0 && subscribers.isEmpty && !state.isFinished { _ = cancel() }
    }

    // MARK: lifecycle

    /// Checks the deadlines and renews the lease (called by the loop's `StreamWatch`); false once
    /// the stream ended.
    func checkDeadlines(now: UInt64) -> Bool {
        let here = hub.lanes[lane]
        // Waiting while the fleet has no live worker at all (and this node none of its own): it
        // would only wait out the whole queue wait, so it is refused after a moment.
        if ownsLease, neverStarted, !state.isFinished, here.remote, hub.lanes.count == 1,
           now &- state.created >= hub.configuration.noWorkerWaitNanos, !here.hasWorkers() {
            fail(APIError(.serverBusy, "no worker is running in this fleet; retry shortly", retryAfterMs: 1000), tellWorker: false)
            return false
        }
        let canFallBack = ownsLease && lane + 1 < hub.lanes.count && !here.isUp()
        // A linked worker's silence is the link's to notice (pings), not each stream's.
        for decision in state.check(now: now, watchesSilence: here.remote && link == nil, canFallBack: canFallBack) {
            switch decision {
            case .renewLease:
                if ownsLease { hub.admission?.renew(user: request.ownerID, requestID: request.requestID) }
            case .queueWaitExpired:
                fail(APIError(.serverBusy, "no worker took this completion in time; retry shortly", retryAfterMs: 1000), tellWorker: false)
            case .workerSilent:
                hub.metrics.streamsInterrupted.add(1, ordering: .relaxed)
                fail(APIError(.generationInterrupted, "the worker running this completion stopped answering; retry", retryAfterMs: 100),
                     tellWorker: true)
            case .fallBack:
                // The fleet went away with the job: the next lane (this process) runs it. If a
                // worker of the fleet takes it after all, it is told to stop.
                hub.enqueue(self, lane: lane + 1)
            }
        }
        return !state.isFinished
    }

    /// Another gateway holds the stream and forwards it here: its silence counts like a worker's.
    func following() {
        enqueued()
        if state.following(now: monotonicNanos()) { leftQueue() }
    }

    /// Taken by a worker or ended: no longer counted as queued.
    private func leftQueue() {
        guard countedAsQueued else { return }
        countedAsQueued = false
        hub.metrics.queueLength.subtract(1, ordering: .relaxed)
    }

    /// A message from a worker in this process (straight from its publisher: no lookup).
    func deliver(_ message: RelayMessage) {
        if loop.inEventLoop { return handle(message) }
        let box = UncheckedBox(self)
        loop.execute { box.value.handle(message) }
    }

    /// A message from a worker of lane `lane` (a stream link: the fleet's): dropped if the job
    /// moved to another lane meanwhile.
    func deliver(_ message: RelayMessage, fromLane lane: Int) {
        if loop.inEventLoop { return handle(message, from: lane) }
        let box = UncheckedBox(self)
        loop.execute { box.value.handle(message, from: lane) }
    }

    /// A message from a worker's stream link (`handle` binds the link on the first one).
    func deliverFromLink(_ message: RelayMessage, handle: StreamLinkHandle) {
        let box = UncheckedBox(self)
        let go: @Sendable () -> Void = {
            let me = box.value
            // The job moved to this process's lane (the fleet's went away): a worker of the
            // fleet that took it after all is told to stop.
            if !me.hub.lanes[me.lane].remote || (me.link == nil && me.state.isFinished) {
                handle.cancel()
                if !me.hub.lanes[me.lane].remote { return }
            }
            if me.link == nil { me.link = handle }
            me.handle(message, from: 0)
        }
        if loop.inEventLoop { go() } else { loop.execute(go) }
    }

    /// The link its worker streamed on closed or went silent: the worker is gone (or cut off).
    func linkLost() {
        let box = UncheckedBox(self)
        let go: @Sendable () -> Void = {
            let me = box.value
            guard !me.state.isFinished else { return }
            me.hub.metrics.streamsInterrupted.add(1, ordering: .relaxed)
            me.link = nil
            me.fail(APIError(.generationInterrupted, "the worker running this completion is gone; retry", retryAfterMs: 100), tellWorker: false)
        }
        if loop.inEventLoop { go() } else { loop.execute(go) }
    }

    /// A message for this stream from lane `from` (replays and tests: its own lane).
    func handle(_ message: RelayMessage, from: Int? = nil) {
        // A worker's messages from a lane the job left are not its own (a worker that took the job
        // there after all is told to stop); cancels and follows come from gateways on any lane.
        if let from, from != lane {
            switch message {
            case .event(_, .accepted, let w?):
                hub.tellWorkerToStop(key: key, worker: w, lane: from)
                return
            case .event, .keepalive, .abort: return
            case .cancel, .follow: break
            }
        }
        if state.phase == .enqueueing { enqueued() }
        switch message {
        case .event(_, let event, let w):
            heard()
            switch event {
            case .accepted:
                if let w { worker = w }
                if state.isFinished {
                    tellWorkerToStop()
                } else if state.workerStarted(now: monotonicNanos()) {
                    leftQueue()
                }
            case .delta(let index, let text, let chunk):
                switch state.delta(index: index, now: monotonicNanos()) {
                case .append: break
                case .duplicate, .ignored: return
                case .gap:
                    // A message was lost (the relay reconnected): the text would have a hole.
                    fail(APIError(.generationInterrupted, "part of the stream was lost between nodes; retry", retryAfterMs: 100), tellWorker: true)
                    return
                }
                pieces.append((text, chunk))
                hub.metrics.tokensStreamed.add(1, ordering: .relaxed)
                let e = CompletionEvent.delta(index: index, text: text, chunk: chunk)
                for s in subscribers { s.receive(e) }
            case .done(let reason, let usage, let timings):
                guard !state.isFinished else { return }
                // Times as this gateway saw them (they include the queue and the hops).
                finish(.done(reason, usage, clientTimings(upstream: timings.upstream)))
            case .failed(let e, _):
                guard !state.isFinished else { return }
                finish(.failed(e, tokensSoFar: pieces.count))
            }
        case .keepalive:
            heard()
        case .abort:
            guard !state.isFinished else { return }
            for s in subscribers { s.abortTransport() }
            subscribers.removeAll()
            finish(.failed(APIError(.generationInterrupted, "the model connection dropped mid-answer"), tokensSoFar: pieces.count))
        case .cancel:
            _ = cancel()
        case .follow(_, let replyTo):
            hub.forward(self, to: replyTo)
        }
    }

    private func heard() {
        if state.heard(now: monotonicNanos()) { leftQueue() }
    }

    private func clientTimings(upstream: String) -> Timings {
        state.timings(end: monotonicNanos(), upstream: upstream)
    }

    /// Ends the stream with finish_reason "cancelled" and tells the worker; false if it had ended.
    func cancel() -> Bool {
        guard !state.isFinished else { return false }
        tellWorkerToStop()
        finish(.done(.cancelled, Usage(promptTokens: 0, completionTokens: pieces.count), clientTimings(upstream: "fleet")))
        return true
    }

    func fail(_ error: APIError, tellWorker: Bool) {
        guard !state.isFinished else { return }
        if tellWorker { tellWorkerToStop() }
        finish(.failed(error, tokensSoFar: pieces.count))
    }

    /// Replays a finished stream's transcript (kept in Redis by the gateway that relayed it).
    func replay(_ transcript: [UInt8]) {
        for line in transcript.split(separator: 10) {
            guard !state.isFinished else { return }
            guard let m = try? RelayMessage.decode(Array(line)) else { continue }
            handle(m)
        }
        if !state.isFinished {
            fail(APIError(.generationInterrupted, "the stream's record is incomplete", retryAfterMs: 100), tellWorker: false)
        }
    }

    private func tellWorkerToStop() {
        if let link { return link.cancel() }
        if let worker { hub.tellWorkerToStop(key: key, worker: worker, lane: lane) }
    }

    private func finish(_ event: CompletionEvent) {
        guard state.finish() else { return }
        link = nil  // (the link's connection is not kept for the retention time)
        if neverStarted, let id = queueID, hub.lanes[lane].queue.withdraw(id) { neverQueued = true }
        leftQueue()
        finishedFlag.store(true, ordering: .releasing)
        final = event
        let subs = subscribers
        subscribers.removeAll()
        for s in subs { s.receive(event) }
        // Only a request_id the client chose can be asked for again elsewhere: only then is the
        // stream written out for Redis (not on every completion).
        let keep = ownsLease && request.clientSuppliedID && hub.directory.keepsTranscripts
        hub.ended(self, event, transcript: keep ? transcript(final: event) : nil)
    }

    /// The stream as relay messages, one per line (JSON strings hold no raw newline).
    private func transcript(final: CompletionEvent) -> [UInt8] {
        var out: [UInt8] = []
        var w = JSONWriter(capacity: 256)
        for (i, p) in pieces.enumerated() {
            w.reset()
            RelayMessage.event(requestID: key, .delta(index: i, text: p.text, chunk: p.chunk), worker: nil).encode(into: &w)
            out += w.bytes
            out.append(10)
        }
        w.reset()
        RelayMessage.event(requestID: key, final, worker: nil).encode(into: &w)
        return out + w.bytes
    }
}

/// Delivers a stream's events to a subscriber that lives on another loop (attach by request_id
/// from a connection on another loop).
final class ForeignSubscriber: CompletionSubscriber, @unchecked Sendable {
    let target: CompletionSubscriber
    let loop: EventLoop
    init(target: CompletionSubscriber, streamLoop: EventLoop) {
        self.target = target
        loop = streamLoop
    }
    func receive(_ event: CompletionEvent) {
        let t = UncheckedBox(target)
        target.loop.execute { t.value.receive(event) }
    }
    func abortTransport() {
        let t = UncheckedBox(target)
        target.loop.execute { t.value.abortTransport() }
    }
}

/// The deadlines of one loop's fleet streams, checked by one timer for all of them (a timer per
/// stream would cost a heap entry and a wake-up each). Confined to its loop.
final class StreamWatch: @unchecked Sendable {
    let loop: EventLoop
    let every: UInt64
    private var streams: [FleetStream] = []
    private var armed = false

    init(loop: EventLoop, every: UInt64) {
        self.loop = loop
        self.every = every
    }

    func add(_ stream: FleetStream) {
        streams.append(stream)
        if !armed { arm() }
    }

    private func arm() {
        armed = true
        _ = loop.schedule(afterNanos: every) { [self] in
            let now = monotonicNanos()
            // A check can end a stream, which can start another: sweep a snapshot.
            let current = streams
            streams.removeAll(keepingCapacity: true)
            var live: [FleetStream] = []
            live.reserveCapacity(current.count)
            for s in current where s.checkDeadlines(now: now) { live.append(s) }
            streams = live + streams
            armed = false
            if !streams.isEmpty { arm() }
        }
    }
}
