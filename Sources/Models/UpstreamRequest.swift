import Domain
import JSON

/// The body sent to an upstream model server (pure). A client's request in the upstream's own API
/// (chat to a chat upstream, a prompt to a completions upstream) is forwarded as sent — every
/// field, messages verbatim, fields we do not know — changing only:
/// - `model`: the alias becomes the upstream's model name;
/// - `stream` (always true: the proxy streams, for first-token routing and hedging) and
///   `stream_options.include_usage` (always asked; the gateway gives usage to clients that asked);
/// - the token limit, only when the client set none: the operator's cap, as `max_completion_tokens`
///   to a chat upstream and `max_tokens` to a completions one (which knows no other name: a
///   client's `max_completion_tokens` goes to it as `max_tokens`);
/// - our own fields (`request_id`, `preset_id`, `input_context`) are not sent.
/// Anything else (a preset's run, a request in the other API) is built from the prompt and the
/// validated parameters, as one user message to a chat upstream.
enum UpstreamRequest {
    /// Fields of ours that an upstream must not see.
    static let ours: Set<String> = ["model", "stream", "stream_options", "request_id", "preset_id", "input_context", "variables", "preset_version"]

    static func body(_ request: CompletionRequest, model: String, chat: Bool, seed: UInt64) -> [UInt8] {
        if let body = request.passthrough, (request.flavor == .chat) == chat {
            return forwarded(body, model: model, chat: chat, cap: request.parameters.maxTokens)
        }
        return built(request, model: model, chat: chat, seed: seed)
    }

    static func forwarded(_ body: JSONObject, model: String, chat: Bool, cap: Int) -> [UInt8] {
        var w = JSONWriter(capacity: 512)
        w.beginObject()
        w.key("model"); w.string(model)
        var limited = false
        let completionsLimitOnly = !chat && body["max_tokens"].map({ $0.isNull }) ?? true
        for (k, v) in body.pairs where !ours.contains(k) {
            if k == "max_tokens" || k == "max_completion_tokens" { limited = limited || !v.isNull }
            // The completions API knows only max_tokens: the newer name is sent under it.
            if k == "max_completion_tokens" && completionsLimitOnly {
                if !v.isNull { w.key("max_tokens"); w.value(v) }
                continue
            }
            w.key(k); w.value(v)
        }
        if !limited { w.key(chat ? "max_completion_tokens" : "max_tokens"); w.int(cap) }
        w.key("stream"); w.bool(true)
        w.key("stream_options")
        w.beginObject()
        for (k, v) in body["stream_options"]?.objectValue?.pairs ?? [] where k != "include_usage" { w.key(k); w.value(v) }
        w.key("include_usage"); w.bool(true)
        w.endObject()
        w.endObject()
        return w.bytes
    }

    static func built(_ request: CompletionRequest, model: String, chat: Bool, seed: UInt64) -> [UInt8] {
        var w = JSONWriter(capacity: 256 + request.prompt.utf8.count)
        let p = request.parameters
        w.beginObject()
        w.key("model"); w.string(model)
        if chat {
            w.key("messages"); w.beginArray(); w.beginObject(); w.key("role"); w.string("user"); w.key("content"); w.string(request.prompt)
            w.endObject(); w.endArray()
        } else {
            w.key("prompt"); w.string(request.prompt)
        }
        w.key("stream"); w.bool(true)
        w.key("stream_options"); w.beginObject(); w.key("include_usage"); w.bool(true); w.endObject()
        w.key("max_tokens"); w.int(p.maxTokens)
        w.key("temperature"); w.double(p.temperature)
        w.key("top_p"); w.double(p.topP)
        if !p.stop.isEmpty { w.key("stop"); w.beginArray(); for s in p.stop { w.string(s) }; w.endArray() }
        if p.presencePenalty != 0 { w.key("presence_penalty"); w.double(p.presencePenalty) }
        if p.frequencyPenalty != 0 { w.key("frequency_penalty"); w.double(p.frequencyPenalty) }
        // JSON numbers are exact to 2^53: servers refuse bigger seeds.
        w.key("seed"); w.int(Int((p.seed ?? seed) & ((1 << 53) - 1)))
        w.endObject()
        return w.bytes
    }
}
