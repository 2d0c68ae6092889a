import CLinux
import Domain
import JSON
import NetCore
import Runtime
import Synchronization

/// One completion as a gateway relays it from the fleet: the subscribers, what was streamed (for
/// replay), the worker running it, and two deadlines (a job no worker takes; a worker gone silent).
/// Everything but `isFinished` is confined to `loop`.
final class FleetStream: CompletionStream, @unchecked Sendable {
    let key: String
    let request: CompletionRequest
    let loop: EventLoop
    // Strong: the hub outlives its streams (it forgets finished ones after retention).
    let hub: FleetCompletions
    let createdNanos = monotonicNanos()
    let createdEpoch = Int(clinux_realtime_ns() / 1_000_000_000)
    /// False for a stream that relays another gateway's (its lease is not ours to release).
    var ownsLease = true

    /// enqueueing: not on the queue yet (subscribers get `accepted` only once it is, so a refusal
    /// is an ordinary error answer); waiting: for a worker; running: a worker (or this process,
    /// or the gateway it follows) sends its events.
    private enum Phase { case enqueueing, waiting, running, finished }
    private var phase = Phase.enqueueing
    /// Running in this process because the fleet could not be reached (serve nodes only).
    private var local: CompletionScheduler?
    private let finishedFlag = Atomic<Bool>(false)
    private var worker: String?
    private var pieces: [String] = []
    private var final: CompletionEvent?
    private var subscribers: [CompletionSubscriber] = []
    private var lastHeardNanos: UInt64 = 0
    private var startedNanos: UInt64?
    private var firstTokenNanos: UInt64?

    init(key: String, request: CompletionRequest, loop: EventLoop, hub: FleetCompletions) {
        self.key = key
        self.request = request
        self.loop = loop
        self.hub = hub
    }

    var isFinished: Bool { finishedFlag.load(ordering: .acquiring) }
    /// No worker (nor this process) ever took it: a refusal before any work.
    var neverStarted: Bool { worker == nil && local == nil && startedNanos == nil }

    // MARK: subscribers

    func attach(_ s: CompletionSubscriber) {
        if final == nil && subscribers.count >= CompletionJob.maxSubscribers {
            s.receive(.failed(APIError(.invalidRequest, "too many clients are attached to this request_id (at most \(CompletionJob.maxSubscribers))",
                                       field: "request_id"), tokensSoFar: 0))
            return
        }
        if phase == .enqueueing { return subscribers.append(s) }
        s.receive(accepted)
        for (i, p) in pieces.enumerated() { s.receive(.delta(index: i, text: p)) }
        if let final { s.receive(final) } else { subscribers.append(s) }
    }

    private var accepted: CompletionEvent { .accepted(requestID: request.requestID, model: request.parameters.model, created: createdEpoch) }

    /// The job is on the queue (or runs here): its subscribers learn it was accepted.
    func enqueued() {
        guard phase == .enqueueing else { return }
        phase = .waiting
        for s in subscribers { s.receive(accepted) }
    }

    /// Runs the completion in this process (the fleet could not be reached), feeding its events
    /// into this stream as a worker's would be.
    func runLocally(on runner: CompletionScheduler) {
        guard phase == .enqueueing || phase == .waiting else { return }
        local = runner
        enqueued()
        var one = request
        one.clientSuppliedID = false
        if case .failure(let e) = runner.submit(one, subscriber: LocalFeed(stream: self)) {
            local = nil  // it never ran here either
            fail(e, tellWorker: false)
        }
    }

    fileprivate func fromLocal(_ event: CompletionEvent) {
        handle(.event(requestID: key, event, worker: nil), fromLocal: true)
    }

    fileprivate func fromLocalAbort() {
        handle(.abort(requestID: key), fromLocal: true)
    }

    /// Attaches a subscriber that lives on another loop (events hop to it).
    func attachFromAnyLoop(_ s: CompletionSubscriber) {
        if s.loop === loop { return attach(s) }
        let hop = UncheckedBox(LoopHop(target: s, jobLoop: loop))
        loop.execute { [self] in attach(hop.value) }
    }

    func detach(_ s: CompletionSubscriber) {
        if loop === s.loop {
            detachMatching { $0 === s }
        } else {
            let box = UncheckedBox(s)
            loop.execute { [self] in detachMatching { $0 === box.value || ($0 as? LoopHop)?.target === box.value } }
        }
    }

    private func detachMatching(_ match: (CompletionSubscriber) -> Bool) {
        let before = subscribers.count
        subscribers.removeAll(where: match)
        // Nobody listens any more: stop the generation so its slot and lease go to someone else.
        if before > 0 && subscribers.isEmpty && phase != .finished { _ = cancel() }
    }

    // MARK: lifecycle

    /// Checks the two deadlines (called by the loop's `StreamWatch`); false once the stream ended.
    func checkDeadlines(now: UInt64) -> Bool {
        switch phase {
        case .finished: return false
        case .enqueueing where now - createdNanos > hub.configuration.queueWaitNanos,
             .waiting where now - createdNanos > hub.configuration.queueWaitNanos:
            fail(APIError(.serverBusy, "no worker took this completion in time; retry shortly", retryAfterMs: 1000), tellWorker: false)
            return false
        case .running where local == nil && now - lastHeardNanos > hub.configuration.silenceNanos:
            hub.metrics.streamsInterrupted.add(1, ordering: .relaxed)
            fail(APIError(.generationInterrupted, "the worker running this completion stopped answering; retry", retryAfterMs: 100),
                 tellWorker: true)
            return false
        case .waiting where local == nil && !hub.isUp():
            // The fleet went away with the job: a serve node runs it itself.
            if let runner = hub.localRunner { runLocally(on: runner) }
            return phase != .finished
        default:
            return true
        }
    }

    /// Another gateway holds the stream and forwards it here: its silence counts like a worker's.
    func following() {
        enqueued()
        guard phase == .waiting else { return }
        phase = .running
        lastHeardNanos = monotonicNanos()
    }

    func handle(_ message: RelayMessage, fromLocal: Bool = false) {
        if local != nil && !fromLocal {
            // It runs here now: a worker that took the job after all is told to stop.
            if case .event(_, .accepted, let w?) = message { hub.tellWorkerToStop(key: key, worker: w) }
            return
        }
        if phase == .enqueueing { enqueued() }
        switch message {
        case .event(_, let event, let w):
            heard()
            switch event {
            case .accepted:
                if let w { worker = w }
                if phase == .finished {
                    tellWorkerToStop()
                } else if startedNanos == nil {
                    startedNanos = monotonicNanos()
                }
            case .delta(let index, let text):
                guard phase != .finished else { return }
                if index < pieces.count { return }  // already have it (a replay after a follow)
                guard index == pieces.count else {
                    // A message was lost (the relay reconnected): the text would have a hole.
                    fail(APIError(.generationInterrupted, "part of the stream was lost between nodes; retry", retryAfterMs: 100), tellWorker: true)
                    return
                }
                if firstTokenNanos == nil { firstTokenNanos = monotonicNanos() }
                pieces.append(text)
                hub.metrics.tokensStreamed.add(1, ordering: .relaxed)
                let e = CompletionEvent.delta(index: index, text: text)
                for s in subscribers { s.receive(e) }
            case .done(let reason, let usage, let timings):
                guard phase != .finished else { return }
                // Times as this gateway saw them (they include the queue and the hops).
                let end = monotonicNanos()
                let ms: (UInt64) -> Double = { Double($0) / 1e6 }
                let t = Timings(queueMs: ms((startedNanos ?? end) - createdNanos), ttftMs: firstTokenNanos.map { ms($0 - createdNanos) },
                                totalMs: ms(end - createdNanos), upstream: timings.upstream)
                finish(.done(reason, usage, t))
            case .failed(let e, _):
                guard phase != .finished else { return }
                finish(.failed(e, tokensSoFar: pieces.count))
            }
        case .keepalive:
            heard()
        case .abort:
            guard phase != .finished else { return }
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
        lastHeardNanos = monotonicNanos()
        if phase == .waiting { phase = .running }
    }

    /// Ends the stream with finish_reason "cancelled" and tells the worker; false if it had ended.
    func cancel() -> Bool {
        guard phase != .finished else { return false }
        tellWorkerToStop()
        let end = monotonicNanos()
        let ms: (UInt64) -> Double = { Double($0) / 1e6 }
        finish(.done(.cancelled, Usage(promptTokens: 0, completionTokens: pieces.count),
                     Timings(queueMs: ms((startedNanos ?? end) - createdNanos), ttftMs: firstTokenNanos.map { ms($0 - createdNanos) },
                             totalMs: ms(end - createdNanos), upstream: "fleet")))
        return true
    }

    func fail(_ error: APIError, tellWorker: Bool) {
        guard phase != .finished else { return }
        if tellWorker { tellWorkerToStop() }
        finish(.failed(error, tokensSoFar: pieces.count))
    }

    /// Replays a finished stream's transcript (kept in Redis by the gateway that relayed it).
    func replay(_ transcript: [UInt8]) {
        for line in transcript.split(separator: 10) {
            guard phase != .finished else { return }
            guard let m = try? RelayMessage.decode(Array(line)) else { continue }
            handle(m)
        }
        if phase != .finished {
            fail(APIError(.generationInterrupted, "the stream's record is incomplete", retryAfterMs: 100), tellWorker: false)
        }
    }

    private func tellWorkerToStop() {
        if let local { local.cancel(requestID: request.requestID, owner: request.ownerID) }
        if let worker { hub.tellWorkerToStop(key: key, worker: worker) }
    }

    private func finish(_ event: CompletionEvent) {
        phase = .finished
        finishedFlag.store(true, ordering: .releasing)
        final = event
        let subs = subscribers
        subscribers.removeAll()
        for s in subs { s.receive(event) }
        // Only a request_id the client chose can be asked for again elsewhere: only then is the
        // stream written out for Redis (not on every completion).
        hub.ended(self, event, transcript: ownsLease && request.clientSuppliedID ? transcript(final: event) : nil)
    }

    /// The stream as relay messages, one per line (JSON strings hold no raw newline).
    private func transcript(final: CompletionEvent) -> [UInt8] {
        var out: [UInt8] = []
        var w = JSONWriter(capacity: 256)
        for (i, p) in pieces.enumerated() {
            w.reset()
            RelayMessage.event(requestID: key, .delta(index: i, text: p), worker: nil).encode(into: &w)
            out += w.bytes
            out.append(10)
        }
        w.reset()
        RelayMessage.event(requestID: key, final, worker: nil).encode(into: &w)
        return out + w.bytes
    }
}

/// Carries a completion running in this process into the fleet stream that relays it.
private final class LocalFeed: CompletionSubscriber {
    let stream: FleetStream
    var loop: EventLoop { stream.loop }
    init(stream: FleetStream) { self.stream = stream }
    func receive(_ event: CompletionEvent) { stream.fromLocal(event) }
    func abortTransport() { stream.fromLocalAbort() }
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
