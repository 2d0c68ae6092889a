import JSON

/// Which OpenAI shape a completion is asked in: it changes only how events are written.
public enum CompletionFlavor: Sendable {
    case text   // /v1/completions
    case chat   // /v1/chat/completions
}

/// A validated request for one completion.
public struct CompletionRequest: Sendable {
    public var requestID: String
    /// True when the client chose the id (idempotent attach/replay applies).
    public var clientSuppliedID: Bool
    public var prompt: String
    public var parameters: GenerationParameters
    public var stream: Bool
    public var flavor: CompletionFlavor
    public var presetID: String?
    public var inputContext: String?
    /// Whose generation this is: request ids are scoped per user (attach, replay and cancel).
    public var ownerID: String = ""
    /// The API key behind the request (0 with `--auth off`): a revoked key stops its generations.
    public var keyID: Int64 = 0
    /// The admission's fencing counter (0: not admitted through limits, e.g. limits off).
    public var fence: Int64 = 0
    /// Admission said this request_id already ran in the window: attach to it or replay it, never
    /// start it again (it holds no lease and no place in the window of its own).
    public var replayOnly = false
    /// The client's body as it was sent, kept for a model served by upstream model servers: the
    /// proxy forwards it (every field, messages verbatim), changing only what `UpstreamRequest`
    /// says. nil for the built-in model and for presets (built from the prompt and parameters).
    public var passthrough: JSONObject?
    /// `stream_options.include_usage`: a final chunk with `choices: []` and the usage.
    public var includeUsage = false

    public init(requestID: String, clientSuppliedID: Bool, prompt: String, parameters: GenerationParameters,
                stream: Bool, flavor: CompletionFlavor) {
        self.requestID = requestID
        self.clientSuppliedID = clientSuppliedID
        self.prompt = prompt
        self.parameters = parameters
        self.stream = stream
        self.flavor = flavor
    }
}

public enum FinishReason: String, Sendable {
    case stop, length, cancelled
    /// An upstream model's reasons, kept as it gave them.
    case toolCalls = "tool_calls", contentFilter = "content_filter", functionCall = "function_call"

    /// An upstream's finish_reason: unknown ones read as `stop`, and so does its `cancelled`
    /// (only our own cancel ends a stream as cancelled: the client's stream still got its finish).
    public init(upstream s: String) {
        let r = FinishReason(rawValue: s) ?? .stop
        self = r == .cancelled ? .stop : r
    }
}

public struct Usage: Sendable, Equatable {
    public var promptTokens: Int
    public var completionTokens: Int
    /// An upstream's other usage fields (`prompt_tokens_details`, `completion_tokens_details`,
    /// …) as a JSON object's text, written after the counts as it gave them.
    public var details: String?
    public init(promptTokens: Int, completionTokens: Int, details: String? = nil) {
        self.promptTokens = promptTokens
        self.completionTokens = completionTokens
        self.details = details
    }
    public var totalTokens: Int { promptTokens + completionTokens }
}

public struct Timings: Sendable, Equatable {
    public var queueMs: Double
    public var ttftMs: Double?
    public var totalMs: Double
    public var upstream: String
    public init(queueMs: Double, ttftMs: Double?, totalMs: Double, upstream: String) {
        self.queueMs = queueMs
        self.ttftMs = ttftMs
        self.totalMs = totalMs
        self.upstream = upstream
    }

    /// The one place timings are made, from monotonic nanoseconds as the client's gateway saw
    /// them: accepted at `created`, started at `started` (nil: never), first token, end.
    public init(created: UInt64, started: UInt64?, firstToken: UInt64?, end: UInt64, upstream: String) {
        let ms: (UInt64) -> Double = { Double($0 &- created) / 1e6 }
        self.init(queueMs: ms(started ?? end), ttftMs: firstToken.map(ms), totalMs: ms(end), upstream: upstream)
    }
}

/// What a completion stream carries, in order: accepted, delta*, then done or error.
public enum CompletionEvent: Sendable {
    case accepted(requestID: String, model: String, created: Int)
    /// `text`: what the first choice added to the answer. `chunk`: for an upstream model, the
    /// rest of its stream chunk as a JSON object — `choices` as the upstream sent them (tool-call
    /// fragments, logprobs, refusal, finish_reason, fields we do not know) and its other top-level
    /// fields, without `id`, `object`, `created`, `model` and `usage` (ours to write).
    case delta(index: Int, text: String, chunk: String? = nil)
    case done(FinishReason, Usage, Timings)
    case failed(APIError, tokensSoFar: Int)
}

public struct RequestLimits: Sendable {
    public var maxPromptBytes = 256 * 1024
    public var maxMessages = 256
    public init() {}
}

/// Validates completion and chat bodies into `CompletionRequest`s.
public struct CompletionRequestParser: Sendable {
    public let policy: ParameterPolicy
    public let limits: RequestLimits

    public init(policy: ParameterPolicy, limits: RequestLimits = RequestLimits()) {
        self.policy = policy
        self.limits = limits
    }

    /// The preset_id a body names, if any (its preset must be loaded before `parse`).
    public static func presetID(in body: JSONValue?) throws(APIError) -> String? {
        guard let v = body?.objectValue?["preset_id"], !v.isNull else { return nil }
        guard let s = v.stringValue, !s.isEmpty, s.utf8.count <= 64 else { throw .invalid("preset_id", "preset_id must be a preset's id") }
        return s
    }

    /// The preset_version a body names, if any (it needs a preset_id).
    public static func presetVersion(in body: JSONValue?) throws(APIError) -> Int? {
        guard let v = body?.objectValue?["preset_version"], !v.isNull else { return nil }
        guard let n = v.intValue, n >= 1, n <= Int(Int32.max) else {
            throw .invalid("preset_version", "preset_version must be a version number (1 to \(Int32.max))")
        }
        guard try presetID(in: body) != nil else { throw .invalid("preset_version", "preset_version needs a preset_id") }
        return n
    }

    /// Validates a body. With `preset`, its prompt takes the body's `input_context` and its
    /// parameters are the base that the body's parameters override.
    public func parse(_ body: JSONValue?, flavor: CompletionFlavor, preset: Preset? = nil, newID: () -> String) throws(APIError) -> CompletionRequest {
        guard let body else { throw APIError(.invalidRequest, "request body must be a JSON object") }
        guard let o = body.objectValue else { throw APIError(.invalidRequest, "request body must be a JSON object") }
        var prompt = ""
        let hasPreset = preset != nil
        if !hasPreset, let v = o["variables"], !v.isNull {
            throw .invalid("variables", "variables fill a preset's placeholders: send them with preset_id")
        }
        if !hasPreset, let v = o["input_context"], !v.isNull {
            throw .invalid("input_context", "input_context is what a preset runs on: send it with preset_id (or send a prompt or messages)")
        }
        if let preset, preset.mode == .chat, flavor == .text {
            throw .invalid("preset_id", "a chat preset runs on /v1/chat/completions")
        }
        if let preset, preset.mode == .completion, flavor == .chat {
            throw .invalid("preset_id", "a completion preset runs on /v1/completions")
        }
        // A chat preset's messages, filled in; then every message sent (the preset's, the body's).
        var presetTurns: [JSONValue]?
        var sentMessages: [JSONValue]?
        if let preset {
            var input: String?
            if let v = o["input_context"], !v.isNull {
                guard let s = v.stringValue else { throw .invalid("input_context", "input_context must be a string") }
                guard s.utf8.count <= limits.maxPromptBytes else {
                    throw .invalid("input_context", "input_context is longer than \(limits.maxPromptBytes) bytes")
                }
                input = s
            }
            var values: [String: String] = [:]
            if let v = o["variables"], !v.isNull {
                guard let vars = v.objectValue else { throw .invalid("variables", "variables must be an object of names to strings") }
                guard vars.count <= 256 else { throw .invalid("variables", "at most 256 variables") }
                for (k, x) in vars.pairs {
                    guard let s = x.stringValue else { throw .invalid("variables.\(k.prefix(64))", "each variable's value must be a string") }
                    guard s.utf8.count <= limits.maxPromptBytes else {
                        throw .invalid("variables.\(k.prefix(64))", "a variable's value is at most \(limits.maxPromptBytes) bytes")
                    }
                    values[k] = s
                }
            }
            if flavor == .chat {
                presetTurns = try ChatTemplate(preset.messages).render(values: values, input: input, maxBytes: limits.maxPromptBytes).map { t in
                    .object(JSONObject([("role", .string(t.role)), ("content", .string(t.content))]))
                }
            } else {
                prompt = try preset.render(input: input, variables: values, maxBytes: limits.maxPromptBytes)
            }
        }
        switch flavor {
        case .text where hasPreset: break
        case .text:
            if let v = o["prompt"], !v.isNull {
                switch v {
                case .string(let s): prompt = s
                case .array(let a) where a.count == 1 && a[0].stringValue != nil: prompt = a[0].stringValue!
                default: throw .invalid("prompt", "prompt must be a string")
                }
            } else if !hasPreset {
                throw .invalid("prompt", "prompt is required")
            }
        case .chat:
            // A chat preset's messages come first; the body's (if any) follow them, each part
            // flattened once (an error in the body's names its own index).
            var msgs = presetTurns ?? []
            prompt = try chatPrompt(msgs)
            if let v = o["messages"], !(v.isNull && hasPreset) {
                guard let more = v.arrayValue else { throw .invalid("messages", "messages must be a non-empty array") }
                guard more.count <= limits.maxMessages else { throw .invalid("messages", "at most \(limits.maxMessages) messages") }
                let theirs = try chatPrompt(more)
                if !more.isEmpty { prompt += (prompt.isEmpty ? "" : "\n") + theirs }
                msgs += more
            }
            guard !msgs.isEmpty else {
                throw .invalid("messages", hasPreset ? "the preset has no messages and the request none: send messages or input_context"
                                                     : "messages must be a non-empty array")
            }
            guard msgs.count <= limits.maxMessages else {
                throw .invalid("messages", "at most \(limits.maxMessages) messages, the preset's \(presetTurns?.count ?? 0) included")
            }
            if hasPreset { sentMessages = msgs }
        }
        guard prompt.utf8.count <= limits.maxPromptBytes else {
            throw .invalid(flavor == .chat ? "messages" : "prompt", "prompt is longer than \(limits.maxPromptBytes) bytes")
        }
        var base: GenerationParameters?
        if let preset {
            do throws(APIError) { base = try policy.parameters(from: preset.parameters) } catch {
                // A preset saved under older limits (say, a larger max_tokens cap) still runs, with defaults.
                base = nil
            }
        }
        var params = try policy.parameters(from: o, base: base)
        let upstreamModel = policy.upstreamModels.contains(params.model)
        if !upstreamModel { try CompletionRequestParser.refuseWhatTheBuiltinCannotDo(o, flavor: flavor) }
        if upstreamModel, let denied = o.pairs.first(where: { !$0.value.isNull && policy.deniedFields.contains($0.key) }) {
            throw .invalid(denied.key, "this node does not forward \(denied.key) to model servers (the operator's models file denies it)")
        }
        var stream = false
        if let v = o["stream"], !v.isNull {
            guard let b = v.boolValue else { throw .invalid("stream", "stream must be a boolean") }
            stream = b
        }
        var includeUsage = false
        if let v = o["stream_options"], !v.isNull {
            guard let so = v.objectValue else { throw .invalid("stream_options", "stream_options must be an object") }
            if let u = so["include_usage"], !u.isNull {
                guard let b = u.boolValue else { throw .invalid("stream_options.include_usage", "stream_options.include_usage must be a boolean") }
                includeUsage = b
            }
        }
        // An upstream model gets the body as sent; with no limit of the client's own, the
        // operator's cap is the limit (the upstream is told it, and the proxy stops there).
        // A chat preset's run is forwarded as the body a client would have sent: its messages
        // first, its parameters where the body has none (only if they pass today's policy, never
        // one the operator denies; max_tokens and max_completion_tokens are one setting), without
        // our own preset fields.
        var sent = o
        if let preset, let msgs = sentMessages {
            for k in ["preset_id", "preset_version", "variables", "input_context"] { sent[k] = nil }
            sent["messages"] = .array(msgs)
            func given(_ k: String) -> Bool { o[k].map { !$0.isNull } ?? false }
            let limitGiven = given("max_tokens") || given("max_completion_tokens")
            if base != nil {
                for (k, v) in preset.parameters.pairs where !given(k) && !policy.deniedFields.contains(k) {
                    if limitGiven && (k == "max_tokens" || k == "max_completion_tokens") { continue }
                    sent[k] = v
                }
            }
        }
        let forwarded = upstreamModel && (!hasPreset || sentMessages != nil)
        if forwarded && sent["max_tokens"].map({ $0.isNull }) ?? true && sent["max_completion_tokens"].map({ $0.isNull }) ?? true {
            params.maxTokens = policy.maxTokensCap
        }
        var id = newID()
        var supplied = false
        if let v = o["request_id"], !v.isNull {
            guard let s = v.stringValue, CompletionRequestParser.validRequestID(s) else {
                throw .invalid("request_id", "request_id must be 1-128 characters of letters, digits, '-', '_', '.' or ':'")
            }
            id = s
            supplied = true
        }
        var r = CompletionRequest(requestID: id, clientSuppliedID: supplied, prompt: prompt, parameters: params, stream: stream, flavor: flavor)
        r.presetID = preset?.id
        r.includeUsage = includeUsage
        if forwarded { r.passthrough = sent }
        return r
    }

    /// The built-in model cannot call tools, follow a JSON schema or report logprobs: asked to,
    /// it refuses naming the field rather than answer as if it had (`who`: the model that cannot,
    /// also a request converted to an upstream's other API, which would lose them). `n` above 1
    /// is refused by the parameters' own check.
    public static func refuseWhatTheBuiltinCannotDo(_ o: JSONObject, flavor: CompletionFlavor,
                                                    who: String = "the built-in model") throws(APIError) {
        func given(_ k: String) -> JSONValue? {
            guard let v = o[k], !v.isNull else { return nil }
            return v
        }
        if let v = given("tools"), v.arrayValue?.isEmpty != true {
            throw .invalid("tools", "\(who) cannot call tools; use a model served by a chat upstream")
        }
        if given("functions") != nil { throw .invalid("functions", "\(who) cannot call functions") }
        if let v = given("tool_choice"), v.stringValue != "none" {
            throw .invalid("tool_choice", "\(who) cannot call tools: tool_choice must be \"none\" or absent")
        }
        if let v = given("response_format") {
            guard let t = v.objectValue?["type"]?.stringValue else {
                throw .invalid("response_format", "response_format must be an object with a type")
            }
            guard t == "text" else {
                throw .invalid("response_format", "\(who) writes plain text: response_format \(t.prefix(40)) is not supported")
            }
        }
        if let v = given("logprobs"), v.boolValue != false && v.intValue != 0 {
            throw .invalid("logprobs", "\(who) does not report logprobs")
        }
        if given("top_logprobs") != nil { throw .invalid("top_logprobs", "\(who) does not report logprobs") }
        if given("audio") != nil { throw .invalid("audio", "\(who) writes text only") }
        if let m = given("modalities")?.arrayValue, m.contains(where: { $0.stringValue != "text" }) {
            throw .invalid("modalities", "\(who) writes text only")
        }
    }

    /// Chat messages become one prompt for a plain text model: each message on its own line.
    private func chatPrompt(_ msgs: [JSONValue]) throws(APIError) -> String {
        var out = ""
        for (i, m) in msgs.enumerated() {
            guard let o = m.objectValue else { throw .invalid("messages", "messages[\(i)] must be an object") }
            guard let role = o["role"]?.stringValue, ["system", "user", "assistant", "developer", "tool", "function"].contains(role) else {
                throw .invalid("messages", "messages[\(i)].role must be system, user, assistant, developer, tool or function")
            }
            var text = ""
            switch o["content"] {
            case .string(let s)?: text = s
            case .array(let parts)?:
                for part in parts {
                    if part["type"]?.stringValue == "text", let t = part["text"]?.stringValue { text += t }
                }
            case .null?, nil: text = ""
            default: throw .invalid("messages", "messages[\(i)].content must be a string or an array of parts")
            }
            if !out.isEmpty { out += "\n" }
            out += text
        }
        return out
    }

    public static func validRequestID(_ s: String) -> Bool {
        guard (1...128).contains(s.utf8.count) else { return false }
        return s.utf8.allSatisfy { c in
            (48...57).contains(c) || (65...90).contains(c) || (97...122).contains(c)
                || c == UInt8(ascii: "-") || c == UInt8(ascii: "_") || c == UInt8(ascii: ".") || c == UInt8(ascii: ":")
        }
    }
}
