import Domain
import JSON
import XCTest

final class ParameterTests: XCTestCase {
    let policy = ParameterPolicy(defaultModel: "builtin", knownModels: ["builtin"], maxTokensCap: 100, defaultMaxTokens: 50)

    func params(_ json: String) throws(APIError) -> GenerationParameters {
        try policy.parameters(from: (try! JSONParser.parse(json)).objectValue!)
    }

    func testDefaults() throws {
        let p = try params("{}")
        XCTAssertEqual(p, GenerationParameters(model: "builtin", temperature: 1, topP: 1, maxTokens: 50))
        XCTAssertEqual(try params(#"{"temperature":null,"seed":null}"#), p, "null means default")
    }

    func testBoundariesAccepted() throws {
        let p = try params(#"{"temperature":0,"top_p":1,"max_tokens":100,"presence_penalty":-2,"frequency_penalty":2,"stop":["a","b","c","d"],"seed":-5}"#)
        XCTAssertEqual(p.temperature, 0)
        XCTAssertEqual(p.maxTokens, 100)
        XCTAssertEqual(p.stop.count, 4)
        XCTAssertEqual(try params(#"{"temperature":2,"top_p":0.0001,"max_tokens":1,"stop":"x"}"#).stop, ["x"])
        XCTAssertEqual(try params(#"{"max_completion_tokens":7}"#).maxTokens, 7)
    }

    func testEachBadValueNamesItsField() {
        let cases: [(String, String)] = [
            (#"{"model":"gpt-4"}"#, "model"), (#"{"model":""}"#, "model"), (#"{"model":3}"#, "model"),
            (#"{"temperature":2.0001}"#, "temperature"), (#"{"temperature":-1}"#, "temperature"), (#"{"temperature":"1"}"#, "temperature"),
            (#"{"top_p":0}"#, "top_p"), (#"{"top_p":1.5}"#, "top_p"), (#"{"top_p":true}"#, "top_p"),
            (#"{"max_tokens":0}"#, "max_tokens"), (#"{"max_tokens":101}"#, "max_tokens"), (#"{"max_tokens":1.5}"#, "max_tokens"),
            (#"{"max_tokens":"10"}"#, "max_tokens"), (#"{"max_completion_tokens":0}"#, "max_completion_tokens"),
            (#"{"stop":["a","b","c","d","e"]}"#, "stop"), (#"{"stop":[1]}"#, "stop"), (#"{"stop":""}"#, "stop"), (#"{"stop":{}}"#, "stop"),
            (#"{"presence_penalty":2.5}"#, "presence_penalty"), (#"{"frequency_penalty":-2.5}"#, "frequency_penalty"),
            (#"{"seed":0.5}"#, "seed"), (#"{"seed":"7"}"#, "seed"), (#"{"n":3}"#, "n"),
        ]
        for (json, field) in cases {
            do {
                _ = try params(json)
                XCTFail("accepted \(json)")
            } catch {
                XCTAssertEqual(error.code, .invalidRequest, json)
                XCTAssertEqual(error.field, field, json)
                XCTAssertTrue(error.message.contains(field), json)
            }
        }
    }

    func testCompletionRequestParsing() throws {
        let parser = CompletionRequestParser(policy: policy)
        var n = 0
        let newID = { n += 1; return "gen-\(n)" }
        let r = try parser.parse(try JSONParser.parse(#"{"prompt":"hi","stream":true,"request_id":"abc:1"}"#), flavor: .text, newID: newID)
        XCTAssertEqual(r.prompt, "hi")
        XCTAssertTrue(r.stream)
        XCTAssertEqual(r.requestID, "abc:1")
        XCTAssertTrue(r.clientSuppliedID)
        let chat = try parser.parse(try JSONParser.parse(#"{"messages":[{"role":"user","content":"a"},{"role":"assistant","content":[{"type":"text","text":"b"}]}]}"#), flavor: .chat, newID: newID)
        XCTAssertEqual(chat.prompt, "a\nb")
        XCTAssertFalse(chat.clientSuppliedID)
        for (json, field, flavor) in [
            (#"{}"#, "prompt", CompletionFlavor.text), (#"{"prompt":5}"#, "prompt", .text), (#"{"prompt":"x","stream":"yes"}"#, "stream", .text),
            (#"{"prompt":"x","request_id":"has space"}"#, "request_id", .text), (#"{"messages":[]}"#, "messages", .chat),
            (#"{"messages":[{"role":"robot","content":"x"}]}"#, "messages", .chat), (#"{"messages":"x"}"#, "messages", .chat),
        ] {
            XCTAssertThrowsError(try parser.parse(try JSONParser.parse(json), flavor: flavor, newID: newID), json) { e in
                XCTAssertEqual((e as? APIError)?.field, field, json)
            }
        }
        XCTAssertThrowsError(try parser.parse(.array([]), flavor: .text, newID: newID))
        XCTAssertThrowsError(try parser.parse(nil, flavor: .text, newID: newID))
    }

    func testErrorBodyShape() throws {
        let e = APIError(.serverBusy, "busy", retryAfterMs: 250)
        let v = try JSONParser.parse(e.jsonBytes)
        XCTAssertEqual(v["error"]?["code"]?.stringValue, "server_busy")
        XCTAssertEqual(v["error"]?["retry_after_ms"]?.intValue, 250)
        XCTAssertEqual(e.status, 503)
        XCTAssertEqual(APIError(.rateLimitExceeded, "").status, 429)
        XCTAssertEqual(APIError(.payloadTooLarge, "").status, 413)
    }
}
