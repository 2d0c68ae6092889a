import Domain
import FleetCore
import HTTP1
import JSON
import NetCore

/// Serves the API routes over REST: JSON responses, and SSE for `stream: true` completions.
public enum HTTPTransport {
    /// Mounts every API route. A request authenticated by the session cookie that changes state
    /// must come from an allowed Origin when it names one (defence in depth beside SameSite=Strict).
    /// `sseKeepaliveNanos`: while a stream waits for its first token, an SSE comment goes out this
    /// often so proxies and load balancers keep the connection.
    public static func mount(_ api: APIRouter, on router: Router, origins: OriginPolicy, sseKeepaliveNanos: UInt64 = 15_000_000_000) {
        for route in api.table.routes {
            let handler = route.handler
            router.add(route.method, route.patternString, bodyLimit: route.bodyLimit) { req, responder in
                let credential = HTTPCredentials.from(req.headers)
                if case .session? = credential, req.method != "GET",
                   !origins.permits(origin: req.headers.first("origin"), host: req.headers.first("host")) {
                    HTTPReply(responder, keepalive: sseKeepaliveNanos).fail(APIError(.forbidden, "cross-origin request refused"))
                    return
                }
                var call = APICall(method: req.method, path: String(req.path), body: nil)
                call.pathParameters = req.pathParameters
                call.query = APICall.splitTarget(req.head.target[...]).1
                if !req.body.isEmpty {
                    do throws(JSONError) { call.body = try JSONParser.parse(req.body) } catch { call.bodyError = error }
                }
                _ = handler
                api.dispatch(call, HTTPReply(responder, keepalive: sseKeepaliveNanos), credential: credential)
            }
        }
    }
}

final class HTTPReply: APIReply {
    let responder: HTTPResponder
    var loop: EventLoop { responder.loop }
    var isOpen: Bool { responder.isConnected }

    let keepaliveNanos: UInt64
    /// Sent with whatever answer follows (OpenAI's x-ratelimit-* headers).
    private(set) var extraHeaders = HTTPHeaders()

    init(_ r: HTTPResponder, keepalive: UInt64) {
        responder = r
        keepaliveNanos = keepalive
    }

    func rateLimit(limit: Int, remaining: Int, resetMs: Int) {
        extraHeaders.replace("x-ratelimit-limit-requests", "\(limit)")
        extraHeaders.replace("x-ratelimit-remaining-requests", "\(max(0, remaining))")
        extraHeaders.replace("x-ratelimit-reset-requests", "\(max(0, resetMs))ms")
    }

    func allow(_ methods: [String]) { extraHeaders.replace("Allow", methods.joined(separator: ", ")) }

    func respond(status: Int, json: [UInt8]) {
        var h = extraHeaders
        h.add("Content-Type", "application/json")
        responder.send(status: status, headers: h, body: json)
    }

    func fail(_ error: APIError) { responder.send(error, headers: extraHeaders) }

    var showsTokensLive: Bool { false }  // SSE only when the body asked for `stream`

    func completionSubscriber(for request: CompletionRequest) -> CompletionSubscriber {
        // Every answer of a completion names it: streamed, whole or an error.
        extraHeaders.replace("X-Request-Id", request.requestID)
        return request.stream ? SSESubscriber(responder, request, keepalive: keepaliveNanos, headers: extraHeaders) : BufferedSubscriber(self, request)
    }

    func track(_ stream: CompletionStream, subscriber: CompletionSubscriber) {
        // The client hanging up detaches it; a generation nobody listens to is cancelled.
        responder.onClose = { [weak subscriber] in
            guard let subscriber else { return }
            stream.detach(subscriber)
        }
    }
}

/// `stream: true`: one SSE event per token in OpenAI's chunk shape, then `data: [DONE]`. The
/// response head waits for the first token, the end or the first keepalive: a completion that
/// fails before any of them gets an ordinary HTTP error status, as OpenAI answers. An upstream's
/// forwarded chunks are written as they came (under our id and model) and carry their own
/// finish_reason; usage comes in a final `choices: []` chunk only with
/// `stream_options.include_usage`.
final class SSESubscriber: CompletionSubscriber {
    let responder: HTTPResponder
    let request: CompletionRequest
    var loop: EventLoop { responder.loop }
    private var writer = JSONWriter(capacity: 512)
    private var created = 0
    private var first = true
    /// An upstream's chunks came: they carry the finish_reason (unless the stream was cancelled).
    private var forwarded = false
    private var frame: [UInt8] = []
    private let keepaliveNanos: UInt64
    private var keepaliveTimer: TimerHandle?
    private let headers: HTTPHeaders

    init(_ r: HTTPResponder, _ request: CompletionRequest, keepalive: UInt64, headers: HTTPHeaders) {
        responder = r
        self.request = request
        keepaliveNanos = keepalive
        self.headers = headers
    }

    private func startStream() {
        guard responder.state == .idle else { return }
        var h = headers
        h.add("Content-Type", "text/event-stream")
        h.add("Cache-Control", "no-store")
        h.add("X-Accel-Buffering", "no")
        responder.startStream(headers: h)
    }

    /// SSE comments while the first token is awaited (a long TTFT, a queue); the first one
    /// starts the stream.
    private func armKeepalive() {
        guard keepaliveNanos > 0 else { return }
        keepaliveTimer = responder.loop.schedule(afterNanos: keepaliveNanos) { [weak self] in
            guard let self else { return }
            self.startStream()
            guard self.responder.state == .streaming else { return }
            self.responder.writeChunk(":keepalive\n\n")
            self.armKeepalive()
        }
    }

    func receive(_ event: CompletionEvent) {
        switch event {
        case .accepted(_, _, let c):
            created = c
            armKeepalive()
        case .delta(_, let text, let chunk):
            if let t = keepaliveTimer { t.cancel(); keepaliveTimer = nil }
            startStream()
            writer.reset()
            if let chunk {
                forwarded = true
                CompletionEncoding.forwardedChunk(request: request, created: created, chunk: chunk, &writer)
            } else {
                if first && request.flavor == .chat {
                    CompletionEncoding.streamChunk(request: request, created: created, text: "", finish: nil, usage: nil, timings: nil, first: true, &writer)
                    send(writer.bytes)
                    writer.reset()
                    first = false
                }
                CompletionEncoding.streamChunk(request: request, created: created, text: text, finish: nil, usage: nil, timings: nil, first: first, &writer)
            }
            first = false
            send(writer.bytes)
        case .done(let reason, let usage, let timings):
            keepaliveTimer?.cancel()
            startStream()
            if !forwarded || reason == .cancelled {
                writer.reset()
                CompletionEncoding.streamChunk(request: request, created: created, text: request.flavor == .chat ? nil : "", finish: reason,
                                               usage: nil, timings: request.includeUsage ? nil : timings, first: first, &writer)
                send(writer.bytes)
            }
            if request.includeUsage {
                writer.reset()
                CompletionEncoding.usageChunk(request: request, created: created, usage: usage, timings: timings, &writer)
                send(writer.bytes)
            }
            responder.writeChunk("data: [DONE]\n\n")
            responder.end()
        case .failed(let error, _) where responder.state == .idle:
            // Before the stream began: an ordinary error answer.
            keepaliveTimer?.cancel()
            responder.send(error, headers: headers)
        case .failed(let error, _):
            keepaliveTimer?.cancel()
            send(error.jsonBytes)
            responder.writeChunk("data: [DONE]\n\n")
            responder.end()
        }
    }

    func abortTransport() { responder.abort() }

    private func send(_ json: [UInt8]) {
        frame.removeAll(keepingCapacity: true)
        frame.append(contentsOf: "data: ".utf8)
        frame.append(contentsOf: json)
        frame.append(10); frame.append(10)
        frame.withUnsafeBytes { responder.writeChunk($0) }
    }
}

/// `stream: false`: collects the text and answers once with the whole OpenAI object.
final class BufferedSubscriber: CompletionSubscriber {
    let reply: HTTPReply
    let request: CompletionRequest
    var loop: EventLoop { reply.loop }
    private var text = ""
    private var created = 0
    /// An upstream's forwarded chunks, merged (nil until one comes).
    private var chunks: ChunkAggregator?

    init(_ reply: HTTPReply, _ request: CompletionRequest) {
        self.reply = reply
        self.request = request
    }

    func receive(_ event: CompletionEvent) {
        switch event {
        case .accepted(_, _, let c): created = c
        case .delta(_, let t, let chunk):
            if let chunk {
                if chunks == nil {
                    // From the first chunk on, the answer is put together from them (with the
                    // plain text deltas among them, which carry choice 0's text).
                    chunks = ChunkAggregator(chat: request.flavor == .chat)
                    if !text.isEmpty { chunks?.addText(text) }
                }
                chunks?.add(chunk)
            } else if chunks != nil {
                chunks?.addText(t)
            } else {
                text += t
            }
        case .done(let reason, let usage, let timings):
            var w = JSONWriter(capacity: text.utf8.count + 512)
            if let chunks {
                CompletionEncoding.aggregatedResponse(request: request, created: created, chunks: chunks, finish: reason, usage: usage, timings: timings, &w)
            } else {
                CompletionEncoding.fullResponse(request: request, created: created, text: text, finish: reason, usage: usage, timings: timings, &w)
            }
            reply.respond(status: 200, json: w.bytes)
        case .failed(let e, _):
            reply.fail(e)
        }
    }

    func abortTransport() { reply.responder.abort() }
}
