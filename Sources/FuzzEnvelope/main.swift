// libFuzzer target for what a client sends over the WebSocket (and what nodes send each other):
// the job and event codecs, envelope decoding, then the
// request decoding its body goes through (completions, chat, preset runs with input_context,
// preset bodies). Invariants: no crash or hang; whatever is accepted is within every limit the
// API promises (prompt size, parameter ranges, stop sequences, request ids, stored text).
import Domain
import FuzzSupport
import JSON

let policy = ParameterPolicy(defaultModel: "builtin", knownModels: ["builtin", "other"], maxTokensCap: 2048)
let parser = CompletionRequestParser(policy: policy)
let validator = PresetValidator(policy: policy)
let presets = [
    Preset(id: "p", userID: "u", name: "n", description: "", tags: [], prompt: "Summarize: {{input}} / {{input}}",
           parameters: JSONObject([("temperature", .number(0.5)), ("stop", .array([.string("\n")]))]),
           createdAt: "", updatedAt: "", version: 1),
    Preset(id: "q", userID: "u", name: "n", description: "", tags: [], prompt: String(repeating: "{{input}}", count: 3_600),
           parameters: JSONObject(), createdAt: "", updatedAt: "", version: 1),
]

func check(_ r: CompletionRequest) {
    precondition(r.prompt.utf8.count <= parser.limits.maxPromptBytes, "prompt over the limit")
    let p = r.parameters
    precondition((0...2).contains(p.temperature) && p.topP > 0 && p.topP <= 1)
    precondition((1...policy.maxTokensCap).contains(p.maxTokens))
    precondition(p.stop.count <= policy.maxStopSequences && p.stop.allSatisfy { !$0.isEmpty && $0.utf8.count <= policy.maxStopLength })
    precondition((-2...2).contains(p.presencePenalty) && (-2...2).contains(p.frequencyPenalty))
    precondition(policy.knownModels.contains(p.model))
    precondition(CompletionRequestParser.validRequestID(r.requestID))
}

func noNUL(_ v: JSONValue) -> Bool {
    switch v {
    case .string(let s): return !s.utf8.contains(0)
    case .array(let a): return a.allSatisfy(noNUL)
    case .object(let o): return o.pairs.allSatisfy { !$0.key.utf8.contains(0) && noNUL($0.value) }
    default: return true
    }
}

func fuzzOne(_ data: [UInt8]) {
    // What crosses nodes: whatever decodes re-encodes to the same bytes.
    if let (id, event) = try? CompletionWire.decodeEvent(data) {
        var w = JSONWriter()
        CompletionWire.encode(event, requestID: id, into: &w)
        guard let (id2, again) = try? CompletionWire.decodeEvent(w.bytes) else { preconditionFailure("re-encoded event does not decode") }
        var w2 = JSONWriter()
        CompletionWire.encode(again, requestID: id2, into: &w2)
        precondition(w.bytes == w2.bytes, "event encoding is not stable")
    }
    if let fast = RelayMessage.decodeTokenMessage(data) {
        // The fast path accepts only what the general decoder accepts, and reads it the same way.
        guard let general = try? RelayMessage.decodeGeneral(data) else { preconditionFailure("fast path accepted what the decoder refuses") }
        precondition(fast.bytes == general.bytes, "fast path and decoder disagree")
    }
    if let m = try? RelayMessage.decode(data) {
        guard let again = try? RelayMessage.decode(m.bytes) else { preconditionFailure("re-encoded relay message does not decode") }
        precondition(again.bytes == m.bytes, "relay encoding is not stable")
    }
    if let (r, job) = try? CompletionWire.decodeJob(data) {
        precondition((try? CompletionWire.decodeJob(CompletionWire.encode(r, job: job)))?.job == job, "job round trip")
    }
    if let r = try? CompletionWire.decodeRequest(data) {
        precondition((try? CompletionWire.decodeRequest(CompletionWire.encode(r)))?.parameters == r.parameters, "request round trip")
    }
    guard case .success(let e) = Envelope.decode(data) else { return }
    precondition(Envelope.methods.contains(e.method) && e.target.hasPrefix("/") && e.target.utf8.count <= Envelope.maxTargetBytes)
    switch e.id {
    case .string(let s): precondition(!s.isEmpty && s.utf8.count <= 128)
    case .number: break
    default: preconditionFailure("id neither string nor number")
    }
    // Every decoder a body can reach, whatever path the envelope named.
    for flavor in [CompletionFlavor.text, .chat] {
        if let r = try? parser.parse(e.body, flavor: flavor, newID: { "gen-1" }) { check(r) }
    }
    if (try? CompletionRequestParser.presetID(in: e.body)) != nil {
        for preset in presets {
            if let r = try? parser.parse(e.body, flavor: .text, preset: preset, newID: { "gen-2" }) { check(r) }
        }
    }
    if let o = e.body?.objectValue {
        for creating in [true, false] {
            guard let f = try? validator.fields(from: o, creating: creating) else { continue }
            for s in [f.name, f.description, f.prompt].compactMap({ $0 }) { precondition(!s.utf8.contains(0), "NUL in stored text") }
            precondition((f.tags ?? []).allSatisfy { !$0.utf8.contains(0) } && f.parameters.map { noNUL(.object($0)) } ?? true)
            precondition(f.prompt.map { $0.utf8.count <= PresetValidator.maxPromptBytes } ?? true)
            if creating { precondition(f.name != nil && f.prompt != nil) }
        }
    }
}

fuzzMain(fuzzOne)
