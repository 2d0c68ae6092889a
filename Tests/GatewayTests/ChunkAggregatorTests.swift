import Domain
@testable import Gateway
import JSON
import XCTest

/// Forwarded chunks merged into the answer a client that did not stream gets.
final class ChunkAggregatorTests: XCTestCase {
    private func answer(_ chunks: [String], chat: Bool = true) throws -> JSONObject {
        var a = ChunkAggregator(chat: chat)
        for c in chunks { a.add(c) }
        XCTAssertEqual(a.unreadable, 0)
        var w = JSONWriter()
        w.beginObject()
        a.write(finishFallback: .stop, &w)
        w.endObject()
        return try XCTUnwrap(try JSONParser.parse(w.bytes).objectValue)
    }

    func testInterleavedToolCallFragmentsAreJoinedByIndex() throws {
        let o = try answer([
            #"{"choices":[{"index":0,"delta":{"role":"assistant","content":null}}],"system_fingerprint":"fp"}"#,
            #"{"choices":[{"index":0,"delta":{"tool_calls":[{"index":0,"id":"a","type":"function","function":{"name":"get_","arguments":""}}]}}]}"#,
            #"{"choices":[{"index":0,"delta":{"tool_calls":[{"index":1,"id":"b","type":"function","function":{"name":"t","arguments":"{"}}]}}]}"#,
            #"{"choices":[{"index":0,"delta":{"tool_calls":[{"index":0,"function":{"name":"w","arguments":"{\"c\""}}]}}]}"#,
            #"{"choices":[{"index":0,"delta":{"tool_calls":[{"index":1,"function":{"arguments":"}"}}]}}]}"#,
            #"{"choices":[{"index":0,"delta":{"tool_calls":[{"index":0,"function":{"arguments":":1}"}}]}}]}"#,
            #"{"choices":[{"index":0,"delta":{},"finish_reason":"tool_calls"}]}"#,
        ])
        XCTAssertEqual(o["system_fingerprint"]?.stringValue, "fp")
        let c = try XCTUnwrap(o["choices"]?.arrayValue?.first?.objectValue)
        XCTAssertEqual(c["finish_reason"]?.stringValue, "tool_calls")
        let m = try XCTUnwrap(c["message"]?.objectValue)
        XCTAssertEqual(m["content"], .null, "no content: null, as OpenAI answers")
        let calls = try XCTUnwrap(m["tool_calls"]?.arrayValue)
        XCTAssertEqual(calls.map { $0["id"]?.stringValue }, ["a", "b"])
        XCTAssertEqual(calls.map { $0["function"]?.objectValue?["name"]?.stringValue }, ["get_w", "t"])
        XCTAssertEqual(calls.map { $0["function"]?.objectValue?["arguments"]?.stringValue }, [#"{"c":1}"#, "{}"])
    }

    func testContentRefusalLogprobsAndSeveralChoices() throws {
        let o = try answer([
            #"{"choices":[{"index":1,"delta":{"content":"B"},"logprobs":{"content":[{"token":"B","logprob":-1}],"refusal":null}}]}"#,
            #"{"choices":[{"index":0,"delta":{"content":"A"},"logprobs":{"content":[{"token":"A","logprob":-0.5}],"refusal":null}}]}"#,
            #"{"choices":[{"index":0,"delta":{"content":"a"},"logprobs":{"content":[{"token":"a","logprob":-0.25}],"refusal":null}}]}"#,
            #"{"choices":[{"index":1,"delta":{"refusal":"no"},"finish_reason":"content_filter"}]}"#,
        ])
        let choices = try XCTUnwrap(o["choices"]?.arrayValue)
        XCTAssertEqual(choices.map { $0["index"]?.intValue }, [0, 1])
        XCTAssertEqual(choices[0]["message"]?["content"]?.stringValue, "Aa")
        XCTAssertEqual(choices[0]["logprobs"]?["content"]?.arrayValue?.map { $0["token"]?.stringValue }, ["A", "a"])
        XCTAssertEqual(choices[0]["finish_reason"]?.stringValue, "stop", "no finish given: the stream's own")
        XCTAssertEqual(choices[1]["message"]?["refusal"]?.stringValue, "no")
        XCTAssertEqual(choices[1]["finish_reason"]?.stringValue, "content_filter")
    }

    func testLegacyCompletionsText() throws {
        let o = try answer([#"{"choices":[{"index":0,"text":"Hel","logprobs":null}]}"#,
                            #"{"choices":[{"index":0,"text":"lo","logprobs":null,"finish_reason":"length"}]}"#], chat: false)
        let c = try XCTUnwrap(o["choices"]?.arrayValue?.first)
        XCTAssertEqual(c["text"]?.stringValue, "Hello")
        XCTAssertEqual(c["finish_reason"]?.stringValue, "length")
    }
}
