import Domain
import JSON
import XCTest

/// Chat presets: validation, the messages as templates, and how a run is parsed.
final class ChatPresetTests: XCTestCase {
    let validator = PresetValidator(policy: ParameterPolicy(defaultModel: "builtin", knownModels: ["builtin"]))

    func fields(_ json: String, creating: Bool = true) throws(APIError) -> PresetFields {
        try validator.fields(from: (try! JSONParser.parse(json)).objectValue!, creating: creating)
    }

    func field(_ json: String, creating: Bool = true) -> String? {
        do { _ = try fields(json, creating: creating); return nil } catch { return error.field ?? "(none)" }
    }

    func chat(_ turns: [(String, String)], parameters: JSONObject = JSONObject()) -> Preset {
        var p = Preset(id: "i", userID: "u", name: "n", description: "", tags: [], prompt: "", parameters: parameters,
                       createdAt: "", updatedAt: "", version: 1)
        p.mode = .chat
        p.messages = turns.map { ChatTurn(role: $0.0, content: $0.1) }
        return p
    }

    func testValidation() throws {
        let f = try fields(#"{"name":"c","mode":"chat","messages":[{"role":"system","content":"Be brief about {{topic}}."},{"role":"user","content":"hi"}]}"#)
        XCTAssertEqual(f.mode, .chat)
        XCTAssertEqual(f.messages, [ChatTurn(role: "system", content: "Be brief about {{topic}}."), ChatTurn(role: "user", content: "hi")])
        XCTAssertNil(f.prompt, "a chat preset needs no prompt")
        XCTAssertEqual(field(#"{"name":"c","mode":"chat"}"#), "messages", "a chat preset needs messages")
        XCTAssertEqual(field(#"{"name":"c","mode":"chat","messages":[]}"#), "messages")
        XCTAssertEqual(field(#"{"name":"c","mode":"poem","prompt":"p"}"#), "mode")
        XCTAssertEqual(field(#"{"name":"c","prompt":"p","messages":[{"role":"user","content":"x"}]}"#), "messages", "messages need mode chat")
        XCTAssertEqual(field(#"{"name":"c","mode":"chat","messages":[{"role":"tool","content":"x"}]}"#), "messages[0].role")
        XCTAssertEqual(field(#"{"name":"c","mode":"chat","messages":[{"role":"user"}]}"#), "messages[0].content")
        XCTAssertEqual(field(#"{"name":"c","mode":"chat","messages":[{"role":"user","content":"a"},{"role":"user","content":7}]}"#), "messages[1].content")
        XCTAssertEqual(field(#"{"name":"c","mode":"chat","messages":"hi"}"#), "messages")
        XCTAssertEqual(field(#"{"name":"c","mode":"chat","messages":[{"role":"user","content":"a\u0000b"}]}"#), "messages[0].content")
        let many = "[" + Array(repeating: #"{"role":"user","content":"x"}"#, count: 51).joined(separator: ",") + "]"
        XCTAssertEqual(field(#"{"name":"c","mode":"chat","messages":\#(many)}"#), "messages")
        let big = String(repeating: "a", count: 20_000)
        XCTAssertEqual(field(#"{"name":"c","mode":"chat","messages":[{"role":"user","content":"\#(big)"},{"role":"user","content":"\#(big)"}]}"#),
                       "messages", "the contents' total is bounded")
        XCTAssertNil(field(#"{"messages":[{"role":"user","content":"x"}]}"#, creating: false), "a PATCH may change messages alone")
    }

    func testVariablesComeFromTheMessages() {
        let p = chat([("system", "You teach {{audience}}."), ("user", "{{input}} for {{audience}} in {{lang}}")])
        XCTAssertEqual(p.variables, ["audience", "input", "lang"])
        var w = JSONWriter()
        p.write(&w)
        let o = (try! JSONParser.parse(w.string)).objectValue!
        XCTAssertEqual(o["mode"]?.stringValue, "chat")
        XCTAssertEqual(o["messages"]?.arrayValue?.count, 2)
        XCTAssertEqual(o["variables"]?.arrayValue?.compactMap(\.stringValue), ["audience", "input", "lang"])
        XCTAssertEqual(Preset(json: o.withOwner())?.messages, p.messages, "the cache's copy keeps the messages")
    }

    func testTemplateRendersEveryMessageAndBoundsTheTotal() throws {
        let t = ChatTemplate([ChatTurn(role: "system", content: "About {{topic}}."), ChatTurn(role: "user", content: "Tell me: {{input}}")])
        XCTAssertEqual(try t.render(values: ["topic": "tides"], input: "why?"),
                       [ChatTurn(role: "system", content: "About tides."), ChatTurn(role: "user", content: "Tell me: why?")])
        XCTAssertThrowsError(try t.render(values: [:], input: nil)) { XCTAssertEqual(($0 as? APIError)?.field, "variables.topic") }
        XCTAssertThrowsError(try t.render(values: ["topic": "x", "other": "y"], input: nil)) { XCTAssertEqual(($0 as? APIError)?.field, "variables.other") }
        // Without {{input}} anywhere, the input becomes a last user turn.
        let plain = ChatTemplate([ChatTurn(role: "system", content: "Be brief.")])
        XCTAssertEqual(try plain.render(values: [:], input: "hello"), [ChatTurn(role: "system", content: "Be brief."), ChatTurn(role: "user", content: "hello")])
        XCTAssertEqual(try plain.render(values: [:], input: nil), [ChatTurn(role: "system", content: "Be brief.")])
        // The size over all messages is known before any is built.
        let bomb = ChatTemplate(Array(repeating: ChatTurn(role: "user", content: String(repeating: "{{input}}", count: 1000)), count: 50))
        XCTAssertThrowsError(try bomb.render(values: [:], input: String(repeating: "a", count: 1 << 16), maxBytes: 256 * 1024)) {
            XCTAssertEqual(($0 as? APIError)?.field, "input_context")
        }
    }

    func testARunOfAChatPreset() throws {
        let parser = CompletionRequestParser(policy: validator.policy)
        let p = chat([("system", "You answer in {{lang}}."), ("user", "{{input}}")], parameters: JSONObject([("temperature", .number(0.3))]))
        func parse(_ body: String, flavor: CompletionFlavor = .chat, preset: Preset? = nil) throws -> CompletionRequest {
            try parser.parse(try JSONParser.parse(body), flavor: flavor, preset: preset ?? p, newID: { "id" })
        }
        let r = try parse(#"{"input_context":"hello","variables":{"lang":"French"}}"#)
        XCTAssertEqual(r.prompt, "You answer in French.\nhello")
        XCTAssertEqual(r.parameters.temperature, 0.3, "the preset's parameters")
        XCTAssertEqual(r.presetID, "i")
        let more = try parse(#"{"input_context":"hi","variables":{"lang":"German"},"messages":[{"role":"assistant","content":"Hallo"},{"role":"user","content":"more"}],"temperature":1.1}"#)
        XCTAssertEqual(more.prompt, "You answer in German.\nhi\nHallo\nmore", "the body's messages follow the preset's")
        XCTAssertEqual(more.parameters.temperature, 1.1, "the body's parameters override")
        XCTAssertThrowsError(try parse(#"{"input_context":"x"}"#)) { XCTAssertEqual(($0 as? APIError)?.field, "variables.lang") }
        XCTAssertThrowsError(try parse(#"{"input_context":"x","variables":{"lang":"fr"}}"#, flavor: .text)) {
            XCTAssertEqual(($0 as? APIError)?.field, "preset_id", "a chat preset runs on /v1/chat/completions")
        }
        var completion = p
        completion.mode = .completion
        completion.prompt = "P"
        XCTAssertThrowsError(try parse(#"{"messages":[{"role":"user","content":"x"}]}"#, preset: completion)) {
            XCTAssertEqual(($0 as? APIError)?.field, "preset_id", "a completion preset runs on /v1/completions")
        }
        XCTAssertThrowsError(try parse(#"{}"#, preset: chat([]))) { XCTAssertEqual(($0 as? APIError)?.field, "messages") }
    }

    func testAnUpstreamGetsTheMessagesAndParametersAsAClientWouldSendThem() throws {
        var policy = validator.policy
        policy.knownModels.append("gpt-up")
        policy.upstreamModels = ["gpt-up"]
        let parser = CompletionRequestParser(policy: policy)
        let p = chat([("system", "Be {{tone}}."), ("user", "{{input}}")], parameters: JSONObject([("model", .string("gpt-up")), ("temperature", .number(0.2))]))
        let body = #"{"preset_id":"i","preset_version":1,"input_context":"hi","variables":{"tone":"kind"},"tools":[{"type":"function","function":{"name":"f"}}]}"#
        let r = try parser.parse(try JSONParser.parse(body), flavor: .chat, preset: p, newID: { "id" })
        let sent = try XCTUnwrap(r.passthrough)
        for k in ["preset_id", "preset_version", "variables", "input_context"] { XCTAssertNil(sent[k], k) }
        XCTAssertEqual(sent["messages"]?.arrayValue?.compactMap { $0.objectValue?["content"]?.stringValue }, ["Be kind.", "hi"])
        XCTAssertEqual(sent["model"]?.stringValue, "gpt-up")
        XCTAssertEqual(sent["temperature"]?.doubleValue, 0.2)
        XCTAssertNotNil(sent["tools"], "what the client sent still passes through")
        XCTAssertNil(sent["max_tokens"])
        XCTAssertEqual(r.parameters.maxTokens, policy.maxTokensCap, "no limit from anyone: the operator's cap (the proxy tells the upstream)")

        // The operator denies temperature: the preset's is not forwarded (the client's would be refused).
        var denying = policy
        denying.deniedFields = ["temperature"]
        let d = try CompletionRequestParser(policy: denying).parse(try JSONParser.parse(#"{"input_context":"hi","variables":{"tone":"x"}}"#),
                                                                   flavor: .chat, preset: p, newID: { "id" })
        XCTAssertNil(d.passthrough?["temperature"])
        // A preset's limit under one name and the client's under the other: the client's alone.
        var limited = p
        limited.parameters["max_tokens"] = .number(50)
        let both = try parser.parse(try JSONParser.parse(#"{"input_context":"hi","variables":{"tone":"x"},"max_completion_tokens":7}"#),
                                    flavor: .chat, preset: limited, newID: { "id" })
        XCTAssertNil(both.passthrough?["max_tokens"])
        XCTAssertEqual(both.passthrough?["max_completion_tokens"]?.intValue, 7)
        // Parameters today's policy refuses (a cap lowered since) are not forwarded either.
        var old = p
        old.parameters["max_tokens"] = .number(1_000_000)
        let o = try parser.parse(try JSONParser.parse(#"{"model":"gpt-up","input_context":"hi","variables":{"tone":"x"}}"#), flavor: .chat,
                                 preset: old, newID: { "id" })
        XCTAssertNotNil(o.passthrough)
        XCTAssertNil(o.passthrough?["max_tokens"])
        XCTAssertEqual(o.parameters.maxTokens, policy.maxTokensCap)
        XCTAssertNil(o.passthrough?["temperature"], "the preset's parameters go as a whole or not at all")
    }
}

private extension JSONObject {
    func withOwner() -> JSONObject { var o = self; o["user_id"] = .string("u"); return o }
}
