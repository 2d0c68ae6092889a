import Domain
import JSON
import XCTest

final class PresetTests: XCTestCase {
    let validator = PresetValidator(policy: ParameterPolicy(defaultModel: "builtin", knownModels: ["builtin"]))

    func preset(_ prompt: String) -> Preset {
        Preset(id: "i", userID: "u", name: "n", description: "", tags: [], prompt: prompt, parameters: JSONObject(),
               createdAt: "", updatedAt: "", version: 1)
    }

    func testRenderInput() {
        XCTAssertEqual(preset("Summarize: {{input}} please").render(input: "X"), "Summarize: X please")
        XCTAssertEqual(preset("{{input}} and {{input}}").render(input: "Y"), "Y and Y")
        XCTAssertEqual(preset("Summarize:").render(input: "Z"), "Summarize:\n\nZ")
        XCTAssertEqual(preset("Summarize: {{input}}").render(input: nil), "Summarize: ")
        XCTAssertEqual(preset("").render(input: "only"), "only")
        XCTAssertEqual(preset("{{input}}").render(input: "{{input}}"), "{{input}}", "input is not re-expanded")
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
        let long = String(repeating: "é", count: 120)
        XCTAssertEqual(try fields(#"{"name":"\#(long)","prompt":"p"}"#).name?.count, 120, "characters, not bytes")
        XCTAssertThrowsError(try fields(#"{"name":"\#(long)x","prompt":"p"}"#))
    }
}
