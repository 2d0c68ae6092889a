import JSON

/// How completions travel between nodes (a job on the queue, events on the relay): compact JSON
/// that decodes to exactly what was encoded. Pure; the decoders refuse anything malformed.
public enum CompletionWire {
    public struct DecodeError: Error, Equatable, Sendable {
        public let reason: String
        init(_ r: String) { reason = r }
    }

    // MARK: requests (the job)

    public static func encode(_ r: CompletionRequest) -> [UInt8] { encode(r, job: nil) }

    /// A job on the fleet's queue: the request, the channel its events go to, and the wall-clock
    /// time (ms) after which nobody waits for it any more (a worker drops it unstarted).
    public struct Job: Sendable, Equatable {
        public var replyTo: String
        public var expiresAtMs: Int
        /// The gateway's stream-link address ("host:port") and node id: a worker sends the events
        /// there, not through the relay (nil: a gateway without links; the relay carries them).
        public var link: LinkAddress?
        public init(replyTo: String, expiresAtMs: Int, link: LinkAddress? = nil) {
            self.replyTo = replyTo
            self.expiresAtMs = expiresAtMs
            self.link = link
        }
    }

    /// Where a gateway takes its stream links, and who it is (a worker's hello names the gateway
    /// it means to reach: a port reused by another gateway is refused).
    public struct LinkAddress: Sendable, Hashable {
        public var host: String
        public var port: Int
        public var gateway: String
        public init(host: String, port: Int, gateway: String) {
            self.host = host
            self.port = port
            self.gateway = gateway
        }
    }

    public static func encode(_ r: CompletionRequest, job: Job?) -> [UInt8] {
        var w = JSONWriter(capacity: 256 + r.prompt.utf8.count)
        w.beginObject()
        if let job {
            w.key("reply"); w.string(job.replyTo)
            w.key("exp"); w.int(job.expiresAtMs)
            if let l = job.link {
                w.key("lh"); w.string(l.host)
                w.key("lp"); w.int(l.port)
                w.key("lg"); w.string(l.gateway)
            }
        }
        w.key("id"); w.string(r.requestID)
        w.key("own"); w.bool(r.clientSuppliedID)
        w.key("prompt"); w.string(r.prompt)
        w.key("stream"); w.bool(r.stream)
        w.key("flavor"); w.string(r.flavor == .chat ? "chat" : "text")
        w.key("owner"); w.string(r.ownerID)
        w.key("key"); w.string(String(r.keyID))
        w.key("fence"); w.string(String(r.fence))
        if let p = r.presetID { w.key("preset"); w.string(p) }
        let p = r.parameters
        w.key("model"); w.string(p.model)
        w.key("temperature"); w.double(p.temperature)
        w.key("top_p"); w.double(p.topP)
        w.key("max_tokens"); w.int(p.maxTokens)
        w.key("stop"); w.beginArray(); for s in p.stop { w.string(s) }; w.endArray()
        w.key("presence_penalty"); w.double(p.presencePenalty)
        w.key("frequency_penalty"); w.double(p.frequencyPenalty)
        // As a string: a UInt64 does not fit a JSON number exactly.
        if let s = p.seed { w.key("seed"); w.string(String(s)) }
        if r.includeUsage { w.key("iu"); w.bool(true) }
        if let body = r.passthrough { w.key("body"); w.value(.object(body)) }
        w.endObject()
        return w.bytes
    }

    /// A job holds the client's body one level down (and events a chunk as a string): whatever
    /// the API accepted must decode here.
    static let depthLimit = JSONParser.maxDepth + 2

    public static func decodeRequest(_ bytes: [UInt8]) throws(DecodeError) -> CompletionRequest {
        guard let o = (try? JSONParser.parse(bytes, depthLimit: depthLimit))?.objectValue else { throw DecodeError("not a JSON object") }
        return try decodeRequest(o)
    }

    public static func decodeJob(_ bytes: [UInt8]) throws(DecodeError) -> (request: CompletionRequest, job: Job) {
        guard let o = (try? JSONParser.parse(bytes, depthLimit: depthLimit))?.objectValue else { throw DecodeError("not a JSON object") }
        guard let reply = o["reply"]?.stringValue, let exp = o["exp"]?.intValue else { throw DecodeError("reply or exp missing") }
        var link: LinkAddress?
        if let h = o["lh"]?.stringValue, let p = o["lp"]?.intValue, let g = o["lg"]?.stringValue {
            guard (1...65535).contains(p), !h.isEmpty, h.utf8.count <= 255, g.utf8.count <= 255 else { throw DecodeError("bad link address") }
            link = LinkAddress(host: h, port: p, gateway: g)
        }
        return (try decodeRequest(o), Job(replyTo: reply, expiresAtMs: exp, link: link))
    }

    static func decodeRequest(_ o: JSONObject) throws(DecodeError) -> CompletionRequest {
        func str(_ k: String) throws(DecodeError) -> String {
            guard let s = o[k]?.stringValue else { throw DecodeError("\(k) missing") }
            return s
        }
        func num(_ k: String) throws(DecodeError) -> Double {
            guard let d = o[k]?.doubleValue else { throw DecodeError("\(k) missing") }
            return d
        }
        guard let own = o["own"]?.boolValue, let stream = o["stream"]?.boolValue, let maxTokens = o["max_tokens"]?.intValue,
              let stops = o["stop"]?.arrayValue else { throw DecodeError("fields missing") }
        var stop: [String] = []
        for s in stops {
            guard let t = s.stringValue else { throw DecodeError("stop must hold strings") }
            stop.append(t)
        }
        var seed: UInt64?
        if let s = o["seed"] {
            guard let t = s.stringValue, let v = UInt64(t) else { throw DecodeError("seed") }
            seed = v
        }
        let flavor = try str("flavor")
        guard flavor == "text" || flavor == "chat" else { throw DecodeError("flavor") }
        guard let key = Int64(try str("key")), let fence = Int64(try str("fence")) else { throw DecodeError("key or fence") }
        let params = GenerationParameters(model: try str("model"), temperature: try num("temperature"), topP: try num("top_p"),
                                          maxTokens: maxTokens, stop: stop, presencePenalty: try num("presence_penalty"),
                                          frequencyPenalty: try num("frequency_penalty"), seed: seed)
        var r = CompletionRequest(requestID: try str("id"), clientSuppliedID: own, prompt: try str("prompt"), parameters: params,
                                  stream: stream, flavor: flavor == "chat" ? .chat : .text)
        r.ownerID = try str("owner")
        r.keyID = key
        r.fence = fence
        r.presetID = o["preset"]?.stringValue
        r.includeUsage = o["iu"]?.boolValue ?? false
        if let b = o["body"] {
            guard let body = b.objectValue else { throw DecodeError("body") }
            r.passthrough = body
        }
        return r
    }

    // MARK: events (the relay)

    /// One event of `requestID`'s stream.
    public static func encode(_ event: CompletionEvent, requestID: String, worker: String? = nil, into w: inout JSONWriter) {
        w.beginObject()
        w.key("r"); w.string(requestID)
        if let worker { w.key("w"); w.string(worker) }
        switch event {
        case .accepted(let id, let model, let created):
            w.key("t"); w.string("a")
            w.key("id"); w.string(id)
            w.key("model"); w.string(model)
            w.key("created"); w.int(created)
        case .delta(let index, let text, let chunk):
            w.key("t"); w.string("d")
            w.key("i"); w.int(index)
            w.key("x"); w.string(text)
            if let chunk { w.key("c"); w.string(chunk) }
        case .done(let reason, let usage, let timings):
            w.key("t"); w.string("f")
            w.key("reason"); w.string(reason.rawValue)
            w.key("pt"); w.int(usage.promptTokens)
            w.key("ct"); w.int(usage.completionTokens)
            if let d = usage.details { w.key("ud"); w.string(d) }
            w.key("queue"); w.double(timings.queueMs)
            if let t = timings.ttftMs { w.key("ttft"); w.double(t) }
            w.key("total"); w.double(timings.totalMs)
            w.key("up"); w.string(timings.upstream)
        case .failed(let e, let tokens):
            w.key("t"); w.string("e")
            w.key("code"); w.string(e.code.rawValue)
            w.key("msg"); w.string(e.message)
            if let f = e.field { w.key("field"); w.string(f) }
            if let ms = e.retryAfterMs { w.key("retry"); w.int(ms) }
            if let s = e.upstreamStatus, let body = e.upstreamError { w.key("us"); w.int(s); w.key("ue"); w.string(body) }
            w.key("n"); w.int(tokens)
        }
        w.endObject()
    }

    public static func decodeEvent(_ bytes: [UInt8]) throws(DecodeError) -> (requestID: String, event: CompletionEvent) {
        guard let o = (try? JSONParser.parse(bytes))?.objectValue, let r = o["r"]?.stringValue, let t = o["t"]?.stringValue else {
            throw DecodeError("not an event")
        }
        return (r, try decodeEvent(o, type: t))
    }

    static func decodeEvent(_ o: JSONObject, type t: String) throws(DecodeError) -> CompletionEvent {
        switch t {
        case "a":
            guard let id = o["id"]?.stringValue, let model = o["model"]?.stringValue, let created = o["created"]?.intValue else {
                throw DecodeError("accepted")
            }
            return .accepted(requestID: id, model: model, created: created)
        case "d":
            guard let i = o["i"]?.intValue, let x = o["x"]?.stringValue else { throw DecodeError("delta") }
            var chunk: String?
            if let c = o["c"] {
                guard let s = c.stringValue else { throw DecodeError("delta chunk") }
                chunk = s
            }
            return .delta(index: i, text: x, chunk: chunk)
        case "f":
            guard let reason = o["reason"]?.stringValue.flatMap(FinishReason.init(rawValue:)), let pt = o["pt"]?.intValue,
                  let ct = o["ct"]?.intValue, let queue = o["queue"]?.doubleValue, let total = o["total"]?.doubleValue,
                  let up = o["up"]?.stringValue else { throw DecodeError("done") }
            let timings = Timings(queueMs: queue, ttftMs: o["ttft"]?.doubleValue, totalMs: total, upstream: up)
            var details: String?
            if let d = o["ud"] {
                guard let s = d.stringValue, (try? JSONParser.parse(Array(s.utf8)))?.objectValue != nil else { throw DecodeError("usage details") }
                details = s
            }
            return .done(reason, Usage(promptTokens: pt, completionTokens: ct, details: details), timings)
        case "e":
            guard let code = o["code"]?.stringValue.flatMap(ErrorCode.init(rawValue:)), let msg = o["msg"]?.stringValue,
                  let n = o["n"]?.intValue else { throw DecodeError("error") }
            var e = APIError(code, msg, field: o["field"]?.stringValue, retryAfterMs: o["retry"]?.intValue)
            if let s = o["us"]?.intValue, let body = o["ue"]?.stringValue {
                guard (400...499).contains(s), (try? JSONParser.parse(Array(body.utf8)))?.objectValue != nil else { throw DecodeError("upstream error") }
                e.upstreamStatus = s
                e.upstreamError = body
            }
            return .failed(e, tokensSoFar: n)
        default:
            throw DecodeError("unknown event type")
        }
    }
}

/// What travels on a node's relay channel: a completion's events (to the gateway holding the
/// client), keepalives while a worker waits on its model, and cancels (to the worker running it).
/// `requestID` is the receiver's routing key: the stream key (`StreamKey`) on a gateway's channel,
/// the request_id on a worker's.
public enum RelayMessage: Sendable {
    /// `worker` names the node running it (sent with `accepted`, so the gateway can cancel there).
    case event(requestID: String, CompletionEvent, worker: String?)
    /// "Still running" from a worker with nothing else to say: its silence means it died.
    case keepalive(requestID: String)
    case cancel(requestID: String, owner: String)
    /// The worker's transport to the model broke without an end marker (an injected mid-stream
    /// failure): the gateway drops its clients' transports the same way.
    case abort(requestID: String)
    /// "Send me this stream's events too" (attach by request_id through another gateway).
    case follow(requestID: String, replyTo: String)

    public func encode(into w: inout JSONWriter) {
        switch self {
        case .event(let id, let event, let worker):
            CompletionWire.encode(event, requestID: id, worker: worker, into: &w)
        case .keepalive(let id):
            w.beginObject()
            w.key("r"); w.string(id)
            w.key("t"); w.string("k")
            w.endObject()
        case .cancel(let id, let owner):
            w.beginObject()
            w.key("r"); w.string(id)
            w.key("t"); w.string("c")
            w.key("o"); w.string(owner)
            w.endObject()
        case .abort(let id):
            w.beginObject()
            w.key("r"); w.string(id)
            w.key("t"); w.string("x")
            w.endObject()
        case .follow(let id, let replyTo):
            w.beginObject()
            w.key("r"); w.string(id)
            w.key("t"); w.string("s")
            w.key("to"); w.string(replyTo)
            w.endObject()
        }
    }

    public var bytes: [UInt8] {
        var w = JSONWriter(capacity: 128)
        encode(into: &w)
        return w.bytes
    }

    public static func decode(_ bytes: [UInt8]) throws(CompletionWire.DecodeError) -> RelayMessage {
        if let m = decodeTokenMessage(bytes) { return m }
        return try decodeGeneral(bytes)
    }

    /// The general decoder (a JSON tree); `decode` tries the per-token fast path first.
    public static func decodeGeneral(_ bytes: [UInt8]) throws(CompletionWire.DecodeError) -> RelayMessage {
        guard let o = (try? JSONParser.parse(bytes))?.objectValue, let r = o["r"]?.stringValue, let t = o["t"]?.stringValue else {
            throw CompletionWire.DecodeError("not a relay message")
        }
        switch t {
        case "k": return .keepalive(requestID: r)
        case "x": return .abort(requestID: r)
        case "s":
            guard let to = o["to"]?.stringValue else { throw CompletionWire.DecodeError("follow") }
            return .follow(requestID: r, replyTo: to)
        case "c":
            guard let owner = o["o"]?.stringValue else { throw CompletionWire.DecodeError("cancel") }
            return .cancel(requestID: r, owner: owner)
        default:
            let event = try CompletionWire.decodeEvent(o, type: t)
            return .event(requestID: r, event, worker: o["w"]?.stringValue)
        }
    }
}

extension RelayMessage {
    /// The messages sent per token — a delta or a keepalive, exactly as `encode` writes them and
    /// with no escapes in their strings — read without building a JSON tree. nil for anything
    /// else (the general decoder decides then; it gives the same answer for what this accepts).
    public static func decodeTokenMessage(_ b: [UInt8]) -> RelayMessage? {
        var i = 0
        func literal(_ text: StaticString) -> Bool {
            let n = text.utf8CodeUnitCount
            guard i + n <= b.count else { return false }
            let ok = text.withUTF8Buffer { lit in
                for k in 0..<n where b[i + k] != lit[k] { return false }
                return true
            }
            if ok { i += n }
            return ok
        }
        /// A string with no escape and no control character, as valid UTF-8.
        func plainString() -> String? {
            guard i < b.count, b[i] == 0x22 else { return nil }
            var j = i + 1
            while j < b.count {
                let c = b[j]
                if c == 0x22 { break }
                if c == 0x5C || c < 0x20 { return nil }
                j += 1
            }
            guard j < b.count, let s = String(validating: b[(i + 1)..<j], as: UTF8.self) else { return nil }
            i = j + 1
            return s
        }
        func index() -> Int? {
            var v = 0, digits = 0
            while i < b.count, b[i] >= 0x30, b[i] <= 0x39, digits < 15 {
                v = v * 10 + Int(b[i] - 0x30)
                i += 1
                digits += 1
            }
            // No leading zeros (the encoder never writes them; the general parser refuses them).
            guard digits > 0, !(digits > 1 && b[i - digits] == 0x30) else { return nil }
            return v
        }
        guard literal("{\"r\":"), let r = plainString(), literal(",\"t\":\"") else { return nil }
        if literal("k\"}") {
            return i == b.count ? .keepalive(requestID: r) : nil
        }
        guard literal("d\",\"i\":"), let n = index(), literal(",\"x\":"), let x = plainString(), literal("}"), i == b.count else {
            return nil
        }
        return .event(requestID: r, .delta(index: n, text: x), worker: nil)
    }
}
