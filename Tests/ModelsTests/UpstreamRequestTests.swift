import Domain
import JSON
@testable import Models
import XCTest

/// What the proxy sends an upstream: the client's request as sent, changed only where it must be.
final class UpstreamRequestTests: XCTestCase {
    private func request(_ body: String, flavor: CompletionFlavor = .chat, maxTokens: Int = 2048) throws -> CompletionRequest {
        let o = try XCTUnwrap(try JSONParser.parse(Array(body.utf8)).objectValue)
        var r = CompletionRequest(requestID: "r", clientSuppliedID: false, prompt: "p",
                                  parameters: GenerationParameters(model: "chat", maxTokens: maxTokens), stream: false, flavor: flavor)
        r.passthrough = o
        return r
    }

    private func sent(_ r: CompletionRequest, chat: Bool = true) throws -> JSONObject {
        try XCTUnwrap(try JSONParser.parse(UpstreamRequest.body(r, model: "up-model", chat: chat, seed: 7)).objectValue)
    }

    func testEveryFieldIsForwardedAndOnlyOursChange() throws {
        let body = #"""
        {"model":"chat","messages":[{"role":"developer","content":[{"type":"text","text":"hi"}]},{"role":"tool","tool_call_id":"c1","content":"18 C"}],
         "tools":[{"type":"function","function":{"name":"f","parameters":{"type":"object"}}}],"tool_choice":"auto","n":2,
         "response_format":{"type":"json_schema","json_schema":{"name":"x","schema":{}}},"logprobs":true,"top_logprobs":3,
         "future":{"a":[1,null,"x"]},"stream":false,"stream_options":{"include_usage":false,"other":1},
         "request_id":"mine","preset_id":null,"input_context":"x","max_tokens":9}
        """#
        let r = try request(body)
        let o = try sent(r)
        let original = try XCTUnwrap(r.passthrough)
        for k in ["messages", "tools", "tool_choice", "n", "response_format", "logprobs", "top_logprobs", "future", "max_tokens"] {
            XCTAssertEqual(o[k], original[k], k)
        }
        XCTAssertEqual(o["model"]?.stringValue, "up-model")
        XCTAssertEqual(o["stream"]?.boolValue, true)
        XCTAssertEqual(o["stream_options"]?.objectValue?["include_usage"]?.boolValue, true)
        XCTAssertEqual(o["stream_options"]?.objectValue?["other"]?.intValue, 1, "other stream options are kept")
        for k in ["request_id", "preset_id", "input_context", "max_completion_tokens", "temperature", "top_p", "seed"] {
            XCTAssertNil(o[k], "\(k) is not sent")
        }
    }

    func testNoClientLimitSendsTheCapUnderTheUpstreamsName() throws {
        XCTAssertEqual(try sent(try request(#"{"messages":[]}"#, maxTokens: 100))["max_completion_tokens"]?.intValue, 100)
        XCTAssertEqual(try sent(try request(#"{"prompt":"x"}"#, flavor: .text, maxTokens: 100), chat: false)["max_tokens"]?.intValue, 100)
        let kept = try sent(try request(#"{"messages":[],"max_completion_tokens":5}"#))
        XCTAssertEqual(kept["max_completion_tokens"]?.intValue, 5)
        XCTAssertNil(kept["max_tokens"])
    }

    func testAnotherAPIOrNoBodyIsBuiltFromThePromptAndParameters() throws {
        let o = try sent(try request(#"{"messages":[{"role":"user","content":"x"}],"tools":[]}"#), chat: false)
        XCTAssertEqual(o["prompt"]?.stringValue, "p", "a chat request to a completions upstream becomes its prompt")
        XCTAssertNil(o["tools"])
        var r = try request("{}")
        r.passthrough = nil
        let built = try sent(r)
        XCTAssertEqual(built["messages"]?.arrayValue?.count, 1)
        XCTAssertEqual(built["seed"]?.intValue, 7)
    }

    func testAnUpstreamsErrorObjectIsKeptOrMadeUp() throws {
        let (json, message) = UpstreamAttempt.errorObject(Array(#"{"error":{"message":"bad schema","type":"invalid_request_error","param":"tools","code":"x"}}"#.utf8), status: 400)
        XCTAssertEqual(message, "bad schema")
        let o = try XCTUnwrap(try JSONParser.parse(Array(json.utf8)).objectValue)
        XCTAssertEqual(o["param"]?.stringValue, "tools")
        XCTAssertEqual(o["code"]?.stringValue, "x")
        let (made, m2) = UpstreamAttempt.errorObject(Array("<html>nope</html>".utf8), status: 404)
        XCTAssertTrue(m2.contains("404") && m2.contains("nope"))
        XCTAssertEqual(try JSONParser.parse(Array(made.utf8)).objectValue?["type"]?.stringValue, "invalid_request_error")
    }
}
