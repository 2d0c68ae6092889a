import Domain
import JSON
import XCTest

final class PresetTests: XCTestCase {
    let validator = PresetValidator(policy: ParameterPolicy(defaultModel: "builtin", knownModels: ["builtin"]))

    func preset(_ prompt: String) -> Preset {
        Preset(id: "i", userID: "u", name: "n", description: "", tags: [], prompt: prompt, parameters: JSONObject(),
               createdAt: "", updatedAt: "", version: 1)
    }

    func testRenderInput() throws {
        XCTAssertEqual(try preset("Summarize: {{input}} please").render(input: "X"), "Summarize: X please")
        XCTAssertEqual(try preset("{{input}} and {{input}}").render(input: "Y"), "Y and Y")
        XCTAssertEqual(try preset("Summarize:").render(input: "Z"), "Summarize:\n\nZ")
        XCTAssertEqual(try preset("Summarize: {{input}}").render(input: nil), "Summarize: ")
        XCTAssertEqual(try preset("").render(input: "only"), "only")
        XCTAssertEqual(try preset("{{input}}").render(input: "{{input}}"), "{{input}}", "input is not re-expanded")
        XCTAssertEqual(try preset("é{{input}}ü{{input}}").render(input: "😀"), "é😀ü😀", "multi-byte text around placeholders")
        XCTAssertEqual(try preset("{{{input}}}").render(input: "x"), "{x}")
    }

    /// The size is known before the string is built: a prompt of thousands of placeholders with a
    /// large input is refused by arithmetic, naming input_context, and the limit is exact.
    func testRenderRefusesOversizedExpansionBeforeBuildingIt() throws {
        let bomb = preset(String(repeating: "{{input}}", count: 3_600))
        let input = String(repeating: "a", count: 1 << 20)
        XCTAssertThrowsError(try bomb.render(input: input, maxBytes: 256 * 1024)) { e in
            XCTAssertEqual((e as? APIError)?.field, "input_context")
        }
        let two = preset("A{{input}}B{{input}}C")  // 3 bytes + 2 × input
        XCTAssertEqual(try two.render(input: "xyz", maxBytes: 9), "AxyzBxyzC")
        XCTAssertThrowsError(try two.render(input: "xyz", maxBytes: 8))
        XCTAssertThrowsError(try preset("P").render(input: "abc", maxBytes: 5), "P + blank line + input = 6 bytes")
        XCTAssertEqual(try preset("P").render(input: "abc", maxBytes: 6), "P\n\nabc")
    }

    func testParserBoundsInputContext() throws {
        let parser = CompletionRequestParser(policy: validator.policy)
        let p = preset("Summarize: {{input}}")
        let big = String(repeating: "b", count: 256 * 1024 + 1)
        for body in [#"{"input_context":"\#(big)"}"#, #"{"input_context":7}"#] {
            XCTAssertThrowsError(try parser.parse(try JSONParser.parse(body), flavor: .text, preset: p, newID: { "id" })) { e in
                XCTAssertEqual((e as? APIError)?.field, "input_context")
            }
        }
        let ok = try parser.parse(try JSONParser.parse(#"{"input_context":"the text"}"#), flavor: .text, preset: p, newID: { "id" })
        XCTAssertEqual(ok.prompt, "Summarize: the text")
    }

    func fields(_ json: String, creating: Bool = true) throws(APIError) -> PresetFields {
        try validator.fields(from: (try! JSONParser.parse(json)).objectValue!, creating: creating)
    }

    func testValidation() throws {
        let f = try fields(#"{"name":"  Hello  ","prompt":"p","tags":["a"," a ","b"],"parameters":{"temperature":0.5,"unknown":1,"seed":null}}"#)
        XCTAssertEqual(f.name, "Hello")
        XCTAssertEqual(f.tags, ["a", "b"], "trimmed and de-duplicated")
        XCTAssertEqual(f.parameters?.keys, ["temperature"], "only known, non-null parameter fields are kept")
        XCTAssertNil(try fields(#"{"description":"d"}"#, creating: false).name)
        for (json, field) in [(#"{"prompt":"p"}"#, "name"), (#"{"name":"n"}"#, "prompt"), (#"{"name":"","prompt":"p"}"#, "name"),
                              (#"{"name":"n","prompt":"p","parameters":{"top_p":0}}"#, "parameters.top_p"),
                              (#"{"name":"n","prompt":"p","tags":[""]}"#, "tags"), (#"{"name":5,"prompt":"p"}"#, "name")] {
            XCTAssertThrowsError(try fields(json), json) { e in XCTAssertEqual((e as? APIError)?.field, field, json) }
        }
        // PostgreSQL text cannot hold U+0000: every stored text field refuses it, naming the field.
        for (json, field) in [(#"{"name":"a\u0000b","prompt":"p"}"#, "name"), (#"{"name":"n","prompt":"a\u0000b"}"#, "prompt"),
                              (#"{"name":"n","prompt":"p","description":"x\u0000"}"#, "description"),
                              (#"{"name":"n","prompt":"p","tags":["t\u0000"]}"#, "tags"),
                              (#"{"name":"n","prompt":"p","parameters":{"stop":["ok","a\u0000"]}}"#, "parameters.stop")] {
            XCTAssertThrowsError(try fields(json), json) { e in XCTAssertEqual((e as? APIError)?.field, field, json) }
        }
        XCTAssertThrowsError(try fields(#"{"prompt":"a\u0000b"}"#, creating: false), "PATCH too")
        let long = String(repeating: "é", count: 120)
        XCTAssertEqual(try fields(#"{"name":"\#(long)","prompt":"p"}"#).name?.count, 120, "characters, not bytes")
        XCTAssertThrowsError(try fields(#"{"name":"\#(long)x","prompt":"p"}"#))
    }
}
