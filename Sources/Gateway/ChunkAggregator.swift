import Domain
import JSON

/// Merges an upstream's forwarded stream chunks into the one object a client that did not stream
/// gets, as OpenAI's own non-streamed answer reads (pure): per choice index, text and refusal
/// joined, tool calls put together from their fragments (by index: id, type and name as first
/// given, arguments appended), function_call likewise, logprobs lists appended, other delta text
/// fields (reasoning_content, …) joined and other fields (audio, annotations, …) as last given,
/// the last finish_reason; the chunks' other top-level
/// fields (system_fingerprint, service_tier, …) as last given.
struct ChunkAggregator {
    let chat: Bool

    final class Choice {
        var content: String?
        var refusal: String?
        var toolCalls: [(id: JSONValue?, type: JSONValue?, name: String, arguments: String, extra: JSONObject)] = []
        var functionCall: (name: String, arguments: String)?
        var otherDelta = JSONObject()
        var logprobs: JSONObject?
        var finish: String?
    }

    private(set) var choices: [Int: Choice] = [:]
    private(set) var topLevel = JSONObject()
    /// Chunks that could not be read (never expected: the worker wrote them).
    private(set) var unreadable = 0

    init(chat: Bool) { self.chat = chat }

    /// Text of choice 0 that came as a plain delta (a chunk that held nothing else).
    mutating func addText(_ text: String) {
        let c: Choice
        if let existing = choices[0] { c = existing } else {
            c = Choice()
            choices[0] = c
        }
        c.content = (c.content ?? "") + text
    }

    mutating func add(_ chunk: String) {
        guard let o = (try? JSONParser.parse(Array(chunk.utf8)))?.objectValue else {
            unreadable += 1
            return
        }
        for (k, v) in o.pairs where k != "choices" { topLevel[k] = v }
        for c in o["choices"]?.arrayValue ?? [] {
            // A choice without an index is the first (servers that give one choice may leave it out).
            guard let ch = c.objectValue else { continue }
            let index = ch["index"]?.intValue ?? 0
            guard index >= 0, index < 128 else { continue }
            let choice: Choice
            if let existing = choices[index] { choice = existing } else {
                choice = Choice()
                choices[index] = choice
            }
            merge(ch, into: choice)
        }
    }

    private func merge(_ ch: JSONObject, into c: Choice) {
        if let r = ch["finish_reason"]?.stringValue { c.finish = r }
        if let lp = ch["logprobs"]?.objectValue { c.logprobs = ChunkAggregator.appendLists(lp, to: c.logprobs) }
        if !chat {
            if let t = ch["text"]?.stringValue { c.content = (c.content ?? "") + t }
            return
        }
        guard let d = ch["delta"]?.objectValue else { return }
        for (k, v) in d.pairs {
            switch k {
            case "content":
                if let s = v.stringValue { c.content = (c.content ?? "") + s }
            case "refusal":
                if let s = v.stringValue { c.refusal = (c.refusal ?? "") + s }
            case "role":
                break
            case "tool_calls":
                for t in v.arrayValue ?? [] {
                    guard let call = t.objectValue else { continue }
                    let i = call["index"]?.intValue ?? c.toolCalls.count
                    guard i >= 0, i < 128 else { continue }
                    while c.toolCalls.count <= i { c.toolCalls.append((nil, nil, "", "", JSONObject())) }
                    if let id = call["id"], !id.isNull, c.toolCalls[i].id == nil { c.toolCalls[i].id = id }
                    if let type = call["type"], !type.isNull, c.toolCalls[i].type == nil { c.toolCalls[i].type = type }
                    if let f = call["function"]?.objectValue {
                        c.toolCalls[i].name += f["name"]?.stringValue ?? ""
                        c.toolCalls[i].arguments += f["arguments"]?.stringValue ?? ""
                    }
                    for (ek, ev) in call.pairs where !["index", "id", "type", "function"].contains(ek) { c.toolCalls[i].extra[ek] = ev }
                }
            case "function_call":
                if let f = v.objectValue {
                    var fc = c.functionCall ?? ("", "")
                    fc.name += f["name"]?.stringValue ?? ""
                    fc.arguments += f["arguments"]?.stringValue ?? ""
                    c.functionCall = fc
                }
            default:
                // Text fields we do not know (reasoning_content, …) are joined like content;
                // anything else is kept as last given.
                if let s = v.stringValue, let have = c.otherDelta[k]?.stringValue {
                    c.otherDelta[k] = .string(have + s)
                } else if !v.isNull {
                    c.otherDelta[k] = v
                }
            }
        }
    }

    /// Logprobs of one chunk added to those so far: lists appended, anything else as last given.
    static func appendLists(_ add: JSONObject, to base: JSONObject?) -> JSONObject {
        var out = base ?? JSONObject()
        for (k, v) in add.pairs {
            if let more = v.arrayValue, let have = out[k]?.arrayValue { out[k] = .array(have + more) } else if !(v.isNull && out[k] != nil) { out[k] = v }
        }
        return out
    }

    /// `"choices": [...]` and the top-level fields, written into an object already open.
    func write(finishFallback: FinishReason, _ w: inout JSONWriter) {
        for (k, v) in topLevel.pairs { w.key(k); w.value(v) }
        w.key("choices")
        w.beginArray()
        let indexes = choices.isEmpty ? [0] : choices.keys.sorted()
        for i in indexes {
            let c = choices[i] ?? Choice()
            w.beginObject()
            w.key("index"); w.int(i)
            if chat {
                w.key("message")
                w.beginObject()
                w.key("role"); w.string("assistant")
                w.key("content"); if let s = c.content { w.string(s) } else { w.null() }
                w.key("refusal"); if let s = c.refusal { w.string(s) } else { w.null() }
                if !c.toolCalls.isEmpty {
                    w.key("tool_calls")
                    w.beginArray()
                    for t in c.toolCalls {
                        w.beginObject()
                        w.key("id"); w.value(t.id ?? .null)
                        w.key("type"); w.value(t.type ?? .string("function"))
                        w.key("function"); ChunkAggregator.writeFunction(t.name, t.arguments, &w)
                        for (k, v) in t.extra.pairs { w.key(k); w.value(v) }
                        w.endObject()
                    }
                    w.endArray()
                }
                if let f = c.functionCall { w.key("function_call"); ChunkAggregator.writeFunction(f.name, f.arguments, &w) }
                for (k, v) in c.otherDelta.pairs { w.key(k); w.value(v) }
                w.endObject()
            } else {
                w.key("text"); w.string(c.content ?? "")
            }
            w.key("logprobs"); if let lp = c.logprobs { w.value(.object(lp)) } else { w.null() }
            w.key("finish_reason"); w.string(c.finish ?? finishFallback.rawValue)
            w.endObject()
        }
        w.endArray()
    }

    /// `{"name", "arguments"}` of a tool call or a legacy function call.
    static func writeFunction(_ name: String, _ arguments: String, _ w: inout JSONWriter) {
        w.beginObject()
        w.key("name"); w.string(name)
        w.key("arguments"); w.string(arguments)
        w.endObject()
    }
}
