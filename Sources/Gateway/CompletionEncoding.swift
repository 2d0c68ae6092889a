import Domain
import JSON

/// Writes completion events in the shapes clients expect: the WebSocket envelope (DESIGN §4) and
/// OpenAI's text_completion / chat.completion objects and their stream chunks.
enum CompletionEncoding {
    static func writeUsage(_ u: Usage, _ w: inout JSONWriter) {
        w.beginObject()
        w.key("prompt_tokens"); w.int(u.promptTokens)
        w.key("completion_tokens"); w.int(u.completionTokens)
        w.key("total_tokens"); w.int(u.totalTokens)
        // An upstream's details, as it gave them.
        if let d = u.details { w.rawMembers(of: d) }
        w.endObject()
    }

    static func writeTimings(_ t: Timings, _ w: inout JSONWriter) {
        w.beginObject()
        w.key("queue_ms"); w.double(rounded(t.queueMs))
        w.key("ttft_ms")
        if let v = t.ttftMs { w.double(rounded(v)) } else { w.null() }
        w.key("total_ms"); w.double(rounded(t.totalMs))
        w.key("upstream"); w.string(t.upstream)
        w.endObject()
    }

    static func rounded(_ v: Double) -> Double { (v * 1000).rounded() / 1000 }

    /// Envelope events: `{"id", "type": accepted|delta|done|error, ...}`.
    static func envelope(_ event: CompletionEvent, id: JSONValue, _ w: inout JSONWriter) {
        w.beginObject()
        w.key("id"); w.value(id)
        switch event {
        case .accepted(let requestID, let model, let created):
            w.key("type"); w.string("accepted")
            w.key("request_id"); w.string(requestID)
            w.key("model"); w.string(model)
            w.key("created"); w.int(created)
        case .delta(let index, let text, let chunk):
            w.key("type"); w.string("delta")
            w.key("index"); w.int(index)
            w.key("text"); w.string(text)
            // An upstream model's chunk as it sent it (choices with tool-call fragments, logprobs, …).
            if let chunk { w.key("chunk"); w.raw(Array(chunk.utf8)) }
        case .done(let reason, let usage, let timings):
            w.key("type"); w.string("done")
            w.key("finish_reason"); w.string(reason.rawValue)
            w.key("usage"); writeUsage(usage, &w)
            w.key("timings"); writeTimings(timings, &w)
        case .failed(let error, let tokens):
            w.key("type"); w.string("error")
            w.key("status"); w.int(error.status)
            w.key("error"); error.writeBody(&w)
            w.key("tokens_so_far"); w.int(tokens)
        }
        w.endObject()
    }

    /// `{"id", "object", "created", "model", "choices": [{"index": 0` — what every OpenAI shape starts with.
    static func openChoice(_ request: CompletionRequest, object: String, created: Int, _ w: inout JSONWriter) {
        openObject(request, object: object, created: created, &w)
        w.key("choices")
        w.beginArray()
        w.beginObject()
        w.key("index"); w.int(0)
    }

    /// One OpenAI stream chunk for a delta (or the final chunk when `finish` is set).
    static func streamChunk(request: CompletionRequest, created: Int, text: String?, finish: FinishReason?,
                            usage: Usage?, timings: Timings?, first: Bool, _ w: inout JSONWriter) {
        openChoice(request, object: chunkObject(request), created: created, &w)
        if request.flavor == .chat {
            w.key("delta")
            w.beginObject()
            if first { w.key("role"); w.string("assistant") }
            if let text { w.key("content"); w.string(text) }
            w.endObject()
        } else {
            w.key("text"); w.string(text ?? "")
            w.key("logprobs"); w.null()
        }
        w.key("finish_reason")
        if let finish { w.string(finish.rawValue) } else { w.null() }
        w.endObject()
        w.endArray()
        if let usage { w.key("usage"); writeUsage(usage, &w) }
        if let timings { w.key("timings"); writeTimings(timings, &w) }
        w.endObject()
    }

    /// `{"id", "object", "created", "model"` — what every chunk and answer starts with.
    static func openObject(_ request: CompletionRequest, object: String, created: Int, _ w: inout JSONWriter) {
        w.beginObject()
        w.key("id"); w.string(request.requestID)
        w.key("object"); w.string(object)
        w.key("created"); w.int(created)
        w.key("model"); w.string(request.parameters.model)
    }

    static func chunkObject(_ request: CompletionRequest) -> String { request.flavor == .chat ? "chat.completion.chunk" : "text_completion" }

    /// An upstream's forwarded chunk (`CompletionEvent.delta`'s `chunk`) under our id and model.
    static func forwardedChunk(request: CompletionRequest, created: Int, chunk: String, _ w: inout JSONWriter) {
        openObject(request, object: chunkObject(request), created: created, &w)
        w.rawMembers(of: chunk)  // its fields after ours
        w.endObject()
    }

    /// `stream_options.include_usage`: the last chunk before `[DONE]`, with no choices.
    static func usageChunk(request: CompletionRequest, created: Int, usage: Usage, timings: Timings?, _ w: inout JSONWriter) {
        openObject(request, object: chunkObject(request), created: created, &w)
        w.key("choices"); w.beginArray(); w.endArray()
        w.key("usage"); writeUsage(usage, &w)
        if let timings { w.key("timings"); writeTimings(timings, &w) }
        w.endObject()
    }

    /// The whole (non-streamed) answer of an upstream whose chunks were forwarded.
    static func aggregatedResponse(request: CompletionRequest, created: Int, chunks: ChunkAggregator, finish: FinishReason,
                                   usage: Usage, timings: Timings, _ w: inout JSONWriter) {
        openObject(request, object: request.flavor == .chat ? "chat.completion" : "text_completion", created: created, &w)
        chunks.write(finishFallback: finish, &w)
        w.key("usage"); writeUsage(usage, &w)
        w.key("timings"); writeTimings(timings, &w)
        w.endObject()
    }

    /// The whole (non-streamed) OpenAI response.
    static func fullResponse(request: CompletionRequest, created: Int, text: String, finish: FinishReason,
                             usage: Usage, timings: Timings, _ w: inout JSONWriter) {
        openChoice(request, object: request.flavor == .chat ? "chat.completion" : "text_completion", created: created, &w)
        if request.flavor == .chat {
            w.key("message")
            w.beginObject()
            w.key("role"); w.string("assistant")
            w.key("content"); w.string(text)
            w.endObject()
        } else {
            w.key("text"); w.string(text)
            w.key("logprobs"); w.null()
        }
        w.key("finish_reason"); w.string(finish.rawValue)
        w.endObject()
        w.endArray()
        w.key("usage"); writeUsage(usage, &w)
        w.key("timings"); writeTimings(timings, &w)
        w.endObject()
    }
}
