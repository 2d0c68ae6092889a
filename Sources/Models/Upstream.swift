import Domain
import FleetCore
import HTTP1
import JSON
import NetCore
import Runtime
import Synchronization
import TLS

/// One upstream model server: its settings, health and breaker (shared by every loop, one short
/// lock per request and per first token — never per token), and a connection pool per loop.
public final class Upstream: @unchecked Sendable {
    public let config: UpstreamConfig
    let address: SocketAddress
    struct Books {
        var health = UpstreamHealth()
        var breaker: CircuitBreaker
    }
    private let books: Mutex<Books>
    private let pools = Mutex<[ObjectIdentifier: HTTPClientPool]>([:])
    public let hedges = Atomic<Int>(0)
    public let retries = Atomic<Int>(0)
    public let warmups = Atomic<Int>(0)

    let tls: TLSContext?

    public init(config: UpstreamConfig, address: SocketAddress, breaker: BreakerPolicy) throws(TLSError) {
        self.config = config
        self.address = address
        books = Mutex(Books(breaker: CircuitBreaker(policy: breaker)))
        tls = config.url.tls ? try TLSContext(caFile: config.caFile) : nil
    }

    func pool(on loop: EventLoop) -> HTTPClientPool {
        pools.withLock { p in
            if let existing = p[ObjectIdentifier(loop)] { return existing }
            let host = config.url.port == (config.url.tls ? 443 : 80) ? config.url.host : "\(config.url.host):\(config.url.port)"
            let made = HTTPClientPool(loop: loop, address: address, hostHeader: host, maxConnections: config.maxInFlight,
                                      tls: tls.map { ($0, config.url.host) })
            p[ObjectIdentifier(loop)] = made
            return made
        }
    }

    /// Whether it could take a user's request now (breaker and capacity), without taking it. With
    /// `probedByWarmups` an upstream that is not closed waits for the warmup prober's verdict.
    func available(now: UInt64, probedByWarmups: Bool = false) -> Bool {
        books.withLock { b in
            guard b.health.inFlight < config.maxInFlight else { return false }
            if probedByWarmups { return b.breaker.state == .closed }
            return b.breaker.wouldPermit(now: now)
        }
    }

    /// What the warmup prober should do now: probe a breaker whose open time is up, or warm an
    /// upstream that carried traffic and has been idle `idleNanos`.
    func warmupDue(now: UInt64, idleNanos: UInt64) -> Bool {
        books.withLock { b in
            switch b.breaker.state {
            // Warm only what users used recently (within 10 idle periods): not forever.
            case .closed:
                return idleNanos > 0 && b.health.lastUserRequest > 0 && now - b.health.lastUsed >= idleNanos
                    && now - b.health.lastUserRequest < 10 * idleNanos
            case .open, .halfOpen: return b.breaker.wouldPermit(now: now)
            }
        }
    }

    func score(now: UInt64) -> Double { books.withLock { $0.health.score(now: now) } }

    /// Takes a request slot: nil if the breaker or the capacity says no (unless `force`).
    func acquire(now: UInt64, force: Bool = false, user: Bool = true) -> CircuitBreaker.Permit? {
        books.withLock { b in
            guard b.health.inFlight < config.maxInFlight || force else { return nil }
            guard let p = b.breaker.permit(now: now) ?? (force ? .normal : nil) else { return nil }
            b.health.started(now: now, user: user)
            return p
        }
    }

    func firstToken(afterNanos t: UInt64, now: UInt64, permit: CircuitBreaker.Permit) {
        books.withLock { b in
            b.health.firstToken(afterNanos: t)
            b.breaker.recordSuccess(now: now, permit: permit)
        }
    }

    func ended(now: UInt64, permit: CircuitBreaker.Permit, outcome: AttemptOutcome) {
        books.withLock { b in
            b.health.ended()
            switch outcome {
            case .success: break  // recorded at its first token
            case .failure(let timeout):
                b.health.failed(timeout: timeout)
                b.breaker.recordFailure(now: now, permit: permit)
            case .throttled(let until):
                b.health.throttle(until: until)
                b.breaker.releaseProbe(permit: permit)
            case .abandoned:
                b.breaker.releaseProbe(permit: permit)
            }
        }
    }

    enum AttemptOutcome { case success, failure(timeout: Bool), throttled(until: UInt64), abandoned }

    public struct Snapshot: Sendable {
        public let name: String, region: String, model: String, state: String
        public let inFlight: Int, requests: Int, errors: Int, timeouts: Int, throttled: Int, timesOpened: Int
        public let ttftEWMAMs: Double, ttftP95Ms: Double?
        public let hedges: Int, retries: Int, warmups: Int
        public let lastUsed: UInt64
    }

    public func snapshot() -> Snapshot {
        books.withLock { b in
            Snapshot(name: config.name, region: config.region, model: config.model, state: b.breaker.state.name, inFlight: b.health.inFlight,
                     requests: b.health.requests, errors: b.health.errors, timeouts: b.health.timeouts, throttled: b.health.throttled,
                     timesOpened: b.breaker.timesOpened, ttftEWMAMs: b.health.ttftEWMANanos / 1e6,
                     ttftP95Ms: b.health.ttftP95Nanos.map { Double($0) / 1e6 }, hedges: hedges.load(ordering: .relaxed),
                     retries: retries.load(ordering: .relaxed), warmups: warmups.load(ordering: .relaxed), lastUsed: b.health.lastUsed)
        }
    }

    var ttftP95Nanos: UInt64? { books.withLock { $0.health.ttftP95Nanos } }
}

/// What one attempt at one upstream reports to the run that started it (on the run's loop).
protocol AttemptListener: AnyObject {
    func attemptToken(_ attempt: ModelAttempt, _ text: String)
    /// A forwarded stream chunk (see `GenerationSink.chunk`); `counts`: it holds output (text, a
    /// tool-call fragment, a refusal), not only a role or a finish.
    func attemptChunk(_ attempt: ModelAttempt, _ text: String, _ chunk: String, counts: Bool)
    func attemptFinished(_ attempt: ModelAttempt, _ reason: FinishReason, usage: Usage?)
    /// `throttledUntil`: it answered 429 (not a failure of the upstream).
    func attemptFailed(_ attempt: ModelAttempt, _ error: AttemptError)
}

/// One try of a completion at one upstream (or the built-in model), as the proxy's decisions see
/// it: the real one streams over HTTP (`UpstreamAttempt`); tests drive fakes.
protocol ModelAttempt: AnyObject {
    var upstream: Upstream? { get }
    var permit: CircuitBreaker.Permit { get }
    var startedAt: UInt64 { get }
    /// Tokens it produced so far.
    var tokens: Int { get }
    var name: String { get }
    func start(_ request: CompletionRequest, seed: UInt64, loop: EventLoop, builtin: ModelBackend)
    func cancel()
}

/// Makes attempts (the seam the proxy's decision tests replace).
typealias AttemptFactory = (_ upstream: Upstream?, _ permit: CircuitBreaker.Permit, _ startedAt: UInt64, _ listener: AttemptListener) -> ModelAttempt

struct AttemptError: Error {
    enum Kind {
        case connect, timeout, http(Int), throttled(retryAfterNanos: UInt64), malformed, closedEarly, refused
        /// The upstream found the request wrong (400, 413, 422): its status and `error` object
        /// (JSON text), for the client as they are.
        case rejected(status: Int, error: String)
        /// A 4xx about the gateway's side (401, 402, 403, 404, …: its key, credit, route or the
        /// model name in the models file): not the client's fault; the next upstream may do.
        case operatorSide(status: Int)
    }
    let kind: Kind
    let message: String
    var isTimeout: Bool { if case .timeout = kind { return true }; return false }

    /// What it says about the upstream: a 429 is throttling, a 4xx the request's fault (neither a
    /// failure of the upstream), anything else a failure.
    func outcome(now: UInt64) -> Upstream.AttemptOutcome {
        switch kind {
        case .throttled(let after): return .throttled(until: now + after)
        case .refused, .rejected, .operatorSide: return .abandoned
        default: return .failure(timeout: isTimeout)
        }
    }
}

/// One streamed request to one upstream (OpenAI-compatible SSE), or to the built-in model.
final class UpstreamAttempt: ModelAttempt, HTTPClientDelegate, GenerationSink {
    let upstream: Upstream?   // nil: the built-in model
    let permit: CircuitBreaker.Permit
    let startedAt: UInt64
    weak var listener: AttemptListener?
    var exchange: HTTPClientExchange?
    var builtinRun: RunningGeneration?
    var status = 0
    var errorBody: [UInt8] = []
    var sse = SSEParser()
    var sawDone = false
    var finishReason: FinishReason?
    var usage: Usage?
    var tokens = 0
    var over = false
    var isChat = false
    /// The client's request went as it was sent: chunks go back as they come.
    var forwarding = false
    var sawFinish = false
    /// Chunks with no output yet (the role): sent just before the first that has some.
    var preamble: [String] = []
    var retryAfterNanos: UInt64 = 1_000_000_000
    /// The two bounds of a stream, on the loop: its first *token* (bytes, comments and empty
    /// deltas do not count) and its whole length; the HTTP client only times bytes.
    var firstTokenTimer: TimerHandle?
    var streamTimer: TimerHandle?

    init(upstream: Upstream?, permit: CircuitBreaker.Permit, startedAt: UInt64, listener: AttemptListener) {
        self.upstream = upstream
        self.permit = permit
        self.startedAt = startedAt
        self.listener = listener
    }

    var name: String { upstream?.config.name ?? ModelsConfig.builtin }

    func start(_ request: CompletionRequest, seed: UInt64, loop: EventLoop, builtin: ModelBackend) {
        guard let upstream else {
            builtinRun = builtin.start(request, seed: seed, on: loop, sink: self)
            return
        }
        let c = upstream.config
        isChat = c.api == "chat"
        forwarding = request.passthrough != nil && (request.flavor == .chat) == isChat
        if let body = request.passthrough, !forwarding {
            // Converted to the upstream's other API, these fields would be lost: refused instead.
            do throws(APIError) {
                try CompletionRequestParser.refuseWhatTheBuiltinCannotDo(body, flavor: request.flavor,
                                                                         who: "a model served by a \(c.api) upstream (converted)")
                if let n = body["n"]?.intValue, n > 1 { throw APIError.invalid("n", "a converted request gives one choice: n must be 1") }
            } catch {
                var w = JSONWriter(capacity: 256)
                error.writeBody(&w)
                return fail(.rejected(status: 400, error: w.string), error.message)
            }
        }
        let body = UpstreamRequest.body(request, model: c.model, chat: isChat, seed: seed)
        var h = HTTPHeaders()
        h.add("Content-Type", "application/json")
        h.add("Accept", "text/event-stream")
        if let key = c.apiKey { h.add("Authorization", "Bearer \(key)") }
        let firstMs = c.firstTokenTimeoutMs, streamMs = c.streamTimeoutMs
        firstTokenTimer = loop.schedule(afterNanos: UInt64(firstMs) * 1_000_000) { [weak self] in
            guard let self, self.tokens == 0 else { return }
            self.fail(.timeout, "no first token within \(firstMs) ms (first_token_timeout_ms)")
        }
        streamTimer = loop.schedule(afterNanos: UInt64(streamMs) * 1_000_000) { [weak self] in
            self?.fail(.timeout, "the stream did not end within \(streamMs) ms (stream_timeout_ms)")
        }
        exchange = upstream.pool(on: loop).request(method: "POST", path: c.url.basePath + (isChat ? "/chat/completions" : "/completions"),
                                                   headers: h, body: body,
                                                   timeouts: HTTPClientTimeouts(connectMs: c.connectTimeoutMs, firstByteMs: c.firstTokenTimeoutMs,
                                                                                idleMs: c.idleTimeoutMs), delegate: self)
    }

    private func stopTimers() {
        firstTokenTimer?.cancel()
        streamTimer?.cancel()
        firstTokenTimer = nil
        streamTimer = nil
    }

    func cancel() {
        over = true
        stopTimers()
        exchange?.cancel()
        exchange = nil
        _ = builtinRun?.cancel()
        builtinRun = nil
    }

    private func fail(_ kind: AttemptError.Kind, _ message: String) {
        guard !over else { return }
        over = true
        stopTimers()
        exchange?.cancel()
        exchange = nil
        listener?.attemptFailed(self, AttemptError(kind: kind, message: message))
    }

    /// An upstream's usage numbers, if they are believable: whole, not negative, and within what
    /// any model could count (10 M tokens). Otherwise nil, and our own count stands.
    static func trustedUsage(_ u: JSONObject) -> Usage? {
        let limit = 10_000_000
        guard let pt = u["prompt_tokens"]?.intValue, let ct = u["completion_tokens"]?.intValue,
              (0...limit).contains(pt), (0...limit).contains(ct) else { return nil }
        var details: String?
        let counts: Set<String> = ["prompt_tokens", "completion_tokens", "total_tokens"]
        if u.pairs.contains(where: { !counts.contains($0.key) }) {
            var w = JSONWriter(capacity: 128)
            w.beginObject()
            for (k, v) in u.pairs where !counts.contains(k) { w.key(k); w.value(v) }
            w.endObject()
            details = w.string
        }
        return Usage(promptTokens: pt, completionTokens: ct, details: details)
    }

    // MARK: HTTPClientDelegate

    func responseHead(_ head: HTTPResponseHead) {
        status = head.status
        if status == 429 || status == 503, let ra = head.headers.first("retry-after"), let secs = Double(ra), secs >= 0, secs < 3600 {
            retryAfterNanos = UInt64(secs * 1e9)
        }
    }

    func responseBody(_ bytes: UnsafeRawBufferPointer) {
        guard !over else { return }
        guard status == 200 else {
            if errorBody.count < UpstreamAttempt.maxErrorBody {
                errorBody.append(contentsOf: bytes.prefix(UpstreamAttempt.maxErrorBody - errorBody.count))
            }
            return
        }
        do throws(HTTPResponseError) {
            try sse.feed(bytes) { event in
                guard !over, case .message(_, let data) = event else { return }
                handle(data)
            }
        } catch {
            fail(.malformed, "malformed event stream: \(error)")
        }
    }

    private func handle(_ data: String) {
        if sawDone { return }
        if data == "[DONE]" {
            sawDone = true
            return
        }
        guard let o = (try? JSONParser.parse(data))?.objectValue else { return fail(.malformed, "an event that is not JSON") }
        if let e = o["error"]?.objectValue {
            // An error event (servers that start streaming before they know): throttling is not a failure.
            let code = e["code"]?.stringValue ?? e["type"]?.stringValue ?? ""
            let message = "the upstream reported \(code.isEmpty ? "an error" : code): \(e["message"]?.stringValue ?? "?")"
            if tokens == 0 && (code == "rate_limit_exceeded" || code == "rate_limit_error") {
                let ms = e["retry_after_ms"]?.intValue ?? 1000
                over = true
                stopTimers()
                exchange?.cancel()
                exchange = nil
                listener?.attemptFailed(self, AttemptError(kind: .throttled(retryAfterNanos: UInt64(max(0, min(ms, 3_600_000))) * 1_000_000), message: message))
                return
            }
            return fail(.http(500), message)
        }
        if let u = o["usage"]?.objectValue, let valid = UpstreamAttempt.trustedUsage(u) { usage = valid }
        if forwarding { return forward(o) }
        guard let choice = o["choices"]?.arrayValue?.first?.objectValue else { return }
        let text = isChat ? choice["delta"]?.objectValue?["content"]?.stringValue : choice["text"]?.stringValue
        if let text, !text.isEmpty {
            countOutput()
            listener?.attemptToken(self, text)
        }
        if let r = choice["finish_reason"]?.stringValue {
            finishReason = r == "length" ? .length : .stop
        }
    }

    /// The most of an upstream's error answer that is kept.
    static let maxErrorBody = 16 * 1024

    func responseEnd() {
        guard !over else { return }
        exchange = nil
        if status == 429 { over = true; stopTimers(); return listener?.attemptFailed(self, AttemptError(kind: .throttled(retryAfterNanos: retryAfterNanos), message: "429")) ?? () }
        guard status == 200 else {
            // 5xx and 408 are the upstream's failures. 400, 413 and 422 are about the request the
            // client sent: the client gets them as the upstream wrote them. Any other 4xx (401,
            // 402, 403, 404, …) is about our side — credentials, credit, route, the model name in
            // our models file — nothing the client can fix, and its body (key hints, internal
            // paths) is not passed on.
            if status >= 500 || status == 408 || status < 400 { return fail(.http(status), "HTTP \(status)") }
            guard status == 400 || status == 413 || status == 422 else { return fail(.operatorSide(status: status), "HTTP \(status)") }
            let error = UpstreamAttempt.errorObject(errorBody, status: status)
            return fail(.rejected(status: status, error: error.json), "HTTP \(status): \(error.message.prefix(200))")
        }
        // The end marker must have come: a stream that just stops is an error, never a silent success.
        guard sawDone else { return fail(.closedEarly, "the stream ended without its end marker after \(tokens) tokens") }
        if forwarding && !sawFinish {
            // Every forwarded stream ends with a finish_reason, as OpenAI's do.
            flushPreamble()
            listener?.attemptChunk(self, "", UpstreamAttempt.finishChunk(finishReason ?? .stop, chat: isChat), counts: false)
        }
        over = true
        stopTimers()
        listener?.attemptFinished(self, finishReason ?? .stop, usage: usage)
    }

    /// An upstream's error answer as OpenAI's `error` object (JSON text) and its message: its own
    /// when it sent one, else one made from its status and the start of its body.
    static func errorObject(_ body: [UInt8], status: Int) -> (json: String, message: String) {
        if let e = (try? JSONParser.parse(body))?.objectValue?["error"]?.objectValue {
            var w = JSONWriter(capacity: body.count)
            w.value(.object(e))
            return (w.string, e["message"]?.stringValue ?? "HTTP \(status)")
        }
        let text = String(decoding: body.prefix(200), as: UTF8.self)
        let message = "the model server answered HTTP \(status)" + (text.isEmpty ? "" : ": \(text)")
        var w = JSONWriter(capacity: 256)
        w.beginObject()
        w.key("message"); w.string(message)
        w.key("type"); w.string("invalid_request_error")
        w.key("param"); w.null()
        w.key("code"); w.null()
        w.endObject()
        return (w.string, message)
    }

    /// A chunk that only finishes choice 0 (a stream the upstream ended without one, or one the
    /// proxy cut at max_tokens).
    static func finishChunk(_ reason: FinishReason, chat: Bool) -> String {
        var w = JSONWriter(capacity: 96)
        w.beginObject()
        w.key("choices")
        w.beginArray()
        w.beginObject()
        w.key("index"); w.int(0)
        if chat { w.key("delta"); w.beginObject(); w.endObject() } else { w.key("text"); w.string("") }
        w.key("logprobs"); w.null()
        w.key("finish_reason"); w.string(reason.rawValue)
        w.endObject()
        w.endArray()
        w.endObject()
        return w.string
    }

    /// Top-level fields of an upstream chunk that are ours to write.
    static let ownChunkFields: Set<String> = ["id", "object", "created", "model", "usage"]

    /// One chunk of a forwarded stream: passed on as it came, minus the fields we write; a chunk
    /// with only `usage` (choices: []) is not (the gateway writes usage for clients that asked).
    private func forward(_ o: JSONObject) {
        guard let choices = o["choices"]?.arrayValue, !choices.isEmpty else {
            // `choices: []`: the usage chunk (ours to write) — or one with more (Azure's
            // prompt_filter_results), passed on without the usage.
            guard o["usage"] == nil, o.pairs.contains(where: { $0.key != "choices" && !UpstreamAttempt.ownChunkFields.contains($0.key) }) else { return }
            if tokens == 0 { return hold(UpstreamAttempt.passedOn(o)) }
            // Counted like any chunk with something in it: an endless stream of them is bounded.
            return listener?.attemptChunk(self, "", UpstreamAttempt.passedOn(o), counts: true) ?? ()
        }
        if let text = plainText(o, choices), !text.isEmpty {
            // Only text, nothing the client would miss: the per-token path (no chunk to carry).
            countOutput()
            flushPreamble()
            listener?.attemptToken(self, text)
            return
        }
        var text = ""
        var output = false
        var finishes = false
        for c in choices {
            guard let ch = c.objectValue else { continue }
            let delta = ch["delta"]?.objectValue
            let piece = isChat ? delta?["content"]?.stringValue : ch["text"]?.stringValue
            let first = (ch["index"]?.intValue ?? 0) == 0
            if first, let piece { text = piece }
            if let piece, !piece.isEmpty { output = true }
            // Anything the model wrote but its role: text, tool calls, a refusal, reasoning, audio,
            // fields we do not know yet (an empty string or null is nothing yet).
            for (k, v) in delta?.pairs ?? [] where k != "role" && !v.isNull && v.stringValue?.isEmpty != true { output = true }
            if !(ch["logprobs"]?.isNull ?? true) { output = true }
            if let r = ch["finish_reason"], !r.isNull {
                finishes = true
                if first { finishReason = FinishReason(upstream: r.stringValue ?? "stop") }
            }
        }
        let chunk = UpstreamAttempt.passedOn(o)
        if finishes { sawFinish = true }
        // A role, an empty start: sent with the first output (it is no first token).
        guard output || finishes || tokens > 0 else { return hold(chunk) }
        if output { countOutput() }
        flushPreamble()
        // Every chunk but a bare finish counts against max_tokens (× n): an upstream that streams
        // empty chunks forever is bounded like one that ignores max_tokens.
        listener?.attemptChunk(self, text, chunk, counts: output || !finishes)
    }

    /// A chunk as it is passed on: the upstream's fields, without those that are ours to write.
    static func passedOn(_ o: JSONObject) -> String {
        var w = JSONWriter(capacity: 256)
        w.beginObject()
        for (k, v) in o.pairs where !ownChunkFields.contains(k) { w.key(k); w.value(v) }
        w.endObject()
        return w.string
    }

    /// One more output token: the first stops the first-token bound.
    private func countOutput() {
        tokens += 1
        if tokens == 1 { firstTokenTimer?.cancel(); firstTokenTimer = nil }
    }

    /// Keeps a chunk that comes before any output, bounded: past `maxPreamble` they are sent.
    private func hold(_ chunk: String) {
        preamble.append(chunk)
        if preamble.count >= UpstreamAttempt.maxPreamble { flushPreamble() }
    }

    /// The text of a chunk that holds nothing else — one choice, index 0, its text (or a chat
    /// delta's content, with at most the assistant role), no logprobs, no finish, and no
    /// top-level field but ours — else nil. Such a chunk is what most tokens of most servers
    /// look like; the gateway writes the same chunk from the text alone.
    private func plainText(_ o: JSONObject, _ choices: [JSONValue]) -> String? {
        guard choices.count == 1, let ch = choices[0].objectValue,
              o.pairs.allSatisfy({ $0.key == "choices" || UpstreamAttempt.ownChunkFields.contains($0.key) }) else { return nil }
        var text: String?
        for (k, v) in ch.pairs {
            switch k {
            case "index": guard v.intValue == 0 else { return nil }
            case "logprobs", "finish_reason": guard v.isNull else { return nil }
            case "text" where !isChat: text = v.stringValue
            case "delta" where isChat:
                guard let d = v.objectValue else { return nil }
                for (dk, dv) in d.pairs {
                    switch dk {
                    case "content": text = dv.stringValue
                    case "role": guard dv.stringValue == "assistant" else { return nil }
                    default: return nil
                    }
                }
            default: return nil
            }
        }
        return text
    }

    /// Chunks held before the first output (several choices' roles); past it they are sent.
    static let maxPreamble = 16

    private func flushPreamble() {
        let waiting = preamble
        preamble = []
        for p in waiting { listener?.attemptChunk(self, "", p, counts: false) }
    }

    func responseFailed(_ error: HTTPClientError) {
        exchange = nil
        switch error {
        case .connectFailed, .saturated, .tls: fail(.connect, error.description)
        case .timedOut: fail(.timeout, error.description)
        case .malformed: fail(.malformed, error.description)
        case .invalidRequest: fail(.refused, error.description)
        case .closed: fail(.closedEarly, "\(error.description) after \(tokens) tokens")
        }
    }

    // MARK: GenerationSink (the built-in model)

    func token(_ text: String) {
        guard !over else { return }
        tokens += 1
        listener?.attemptToken(self, text)
    }

    func finished(_ reason: FinishReason, usage: Usage, upstream: String) {
        guard !over else { return }
        over = true
        listener?.attemptFinished(self, reason, usage: usage)
    }

    func failed(_ error: APIError, dropTransport: Bool) {
        fail(tokens == 0 ? .refused : .closedEarly, error.message)
    }
}
