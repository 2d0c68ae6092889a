import Domain
import JSON
import XCTest

/// Requests for upstream models keep the client's body; the built-in model refuses what it
/// cannot do; what is kept crosses nodes intact.
final class ForwardingTests: XCTestCase {
    var parser: CompletionRequestParser {
        var p = ParameterPolicy(defaultModel: "builtin", knownModels: ["builtin", "gpt"], maxTokensCap: 100, defaultMaxTokens: 50)
        p.upstreamModels = ["gpt"]
        return CompletionRequestParser(policy: p)
    }

    func parse(_ json: String, flavor: CompletionFlavor = .chat) throws(APIError) -> CompletionRequest {
        try parser.parse(try! JSONParser.parse(json), flavor: flavor, newID: { "id" })
    }

    func testAnUpstreamModelKeepsTheBodyAndGetsTheCapWhenNoLimitIsGiven() throws {
        let body = #"{"model":"gpt","messages":[{"role":"user","content":"x"}],"tools":[{"type":"function"}],"n":3,"stream_options":{"include_usage":true}}"#
        let r = try parse(body)
        XCTAssertEqual(r.passthrough, try JSONParser.parse(body).objectValue)
        XCTAssertEqual(r.parameters.maxTokens, 100, "the operator's cap when the client set no limit")
        XCTAssertTrue(r.includeUsage)
        XCTAssertEqual(try parse(#"{"model":"gpt","messages":[{"role":"user","content":"x"}],"max_tokens":7}"#).parameters.maxTokens, 7)
        XCTAssertThrowsError(try parse(#"{"model":"gpt","messages":[{"role":"user","content":"x"}],"n":9}"#)) { e in
            XCTAssertEqual((e as? APIError)?.field, "n")
        }
        XCTAssertNil(try parse(#"{"messages":[{"role":"user","content":"x"}]}"#).passthrough, "the built-in model gets no body")
        XCTAssertEqual(try parse(#"{"messages":[{"role":"user","content":"x"}]}"#).parameters.maxTokens, 50)
    }

    func testTheBuiltinModelRefusesWhatItCannotDoNamingTheField() throws {
        let m = #""messages":[{"role":"user","content":"x"}]"#
        let cases: [(String, String)] = [
            (#"{\#(m),"tools":[{"type":"function"}]}"#, "tools"), (#"{\#(m),"functions":[]}"#, "functions"),
            (#"{\#(m),"tool_choice":"auto"}"#, "tool_choice"), (#"{\#(m),"response_format":{"type":"json_object"}}"#, "response_format"),
            (#"{\#(m),"response_format":"json"}"#, "response_format"), (#"{\#(m),"logprobs":true}"#, "logprobs"),
            (#"{\#(m),"top_logprobs":1}"#, "top_logprobs"), (#"{\#(m),"n":2}"#, "n"), (#"{\#(m),"audio":{}}"#, "audio"),
            (#"{\#(m),"modalities":["audio"]}"#, "modalities"), (#"{\#(m),"stream_options":3}"#, "stream_options"),
            (#"{\#(m),"stream_options":{"include_usage":"yes"}}"#, "stream_options.include_usage"),
        ]
        for (body, field) in cases {
            XCTAssertThrowsError(try parse(body), body) { e in XCTAssertEqual((e as? APIError)?.field, field, body) }
        }
        XCTAssertThrowsError(try parse(#"{"prompt":"x","logprobs":3}"#, flavor: .text)) { e in XCTAssertEqual((e as? APIError)?.field, "logprobs") }
        for ok in [#"{\#(m),"tools":[],"tool_choice":"none","response_format":{"type":"text"},"logprobs":false,"n":1,"modalities":["text"]}"#,
                   #"{\#(m),"tools":null,"logprobs":null}"#] {
            XCTAssertNoThrow(try parse(ok), ok)
        }
        XCTAssertNoThrow(try parse(#"{"prompt":"x","logprobs":0}"#, flavor: .text))
    }

    func testTheBodyChunksAndUpstreamErrorsCrossNodesIntact() throws {
        var r = try parse(#"{"model":"gpt","messages":[{"role":"user","content":[{"type":"image_url","image_url":{"url":"u"}}]}],"x":{"y":[true,null]}}"#)
        r.includeUsage = true
        let back = try CompletionWire.decodeRequest(CompletionWire.encode(r))
        XCTAssertEqual(back.passthrough, r.passthrough)
        XCTAssertTrue(back.includeUsage)
        let chunk = #"{"choices":[{"index":0,"delta":{"tool_calls":[{"index":0,"function":{"arguments":"{\""}}]}}]}"#
        var w = JSONWriter()
        CompletionWire.encode(.delta(index: 3, text: "", chunk: chunk), requestID: "k", into: &w)
        guard case .delta(3, "", chunk?) = try CompletionWire.decodeEvent(w.bytes).event else { return XCTFail("chunk lost") }
        let upstream = APIError.fromUpstream(status: 422, error: #"{"message":"m","type":"t","param":"p","code":null}"#, message: "m")
        w.reset()
        CompletionWire.encode(.failed(upstream, tokensSoFar: 0), requestID: "k", into: &w)
        guard case .failed(let e, 0) = try CompletionWire.decodeEvent(w.bytes).event else { return XCTFail("error lost") }
        XCTAssertEqual(e, upstream)
        XCTAssertEqual(e.status, 422)
        XCTAssertEqual(String(decoding: e.jsonBytes, as: UTF8.self), #"{"error":{"message":"m","type":"t","param":"p","code":null}}"#)
        // Only a 4xx with an error object is believed from the wire.
        for bad in [#"{"r":"k","t":"e","code":"invalid_request","msg":"m","n":0,"us":500,"ue":"{}"}"#,
                    #"{"r":"k","t":"e","code":"invalid_request","msg":"m","n":0,"us":400,"ue":"nope"}"#] {
            XCTAssertThrowsError(try CompletionWire.decodeEvent(Array(bad.utf8)), bad)
        }
    }

    func testTheDeepestBodyTheAPIAcceptsCrossesNodes() throws {
        // The deepest nesting the API's parser takes, then one level more (refused there).
        var levels = 80
        var body = ""
        repeat {
            levels -= 1
            body = #"{"model":"gpt","messages":[{"role":"user","content":"x"}],"x":"# + String(repeating: "[", count: levels)
                + String(repeating: "]", count: levels) + "}"
        } while (try? JSONParser.parse(body)) == nil
        XCTAssertGreaterThan(levels, 50)
        let r = try parse(body)
        var job = CompletionWire.Job(replyTo: "c", expiresAtMs: 1)
        job.link = nil
        let back = try CompletionWire.decodeJob(CompletionWire.encode(r, job: job))
        XCTAssertEqual(back.request.passthrough, r.passthrough, "a job holds the body one level deeper: it must still decode")
    }

    func testWholeNumbersAreWrittenAsIntegersUpTo2To53() {
        var w = JSONWriter()
        w.beginArray()
        for d in [1e15 + 1, 9_007_199_254_740_992, -3, 0.5, 1e300, -0.0] { w.double(d) }
        w.endArray()
        XCTAssertEqual(w.string, "[1000000000000001,9007199254740992,-3,0.5,1e+300,-0.0]")
    }

    func testUsageDetailsCrossNodes() throws {
        let u = Usage(promptTokens: 11, completionTokens: 7, details: #"{"completion_tokens_details":{"reasoning_tokens":3}}"#)
        var w = JSONWriter()
        CompletionWire.encode(.done(.toolCalls, u, Timings(queueMs: 1, ttftMs: 2, totalMs: 3, upstream: "a")), requestID: "k", into: &w)
        guard case .done(.toolCalls, let back, _) = try CompletionWire.decodeEvent(w.bytes).event else { return XCTFail("done lost") }
        XCTAssertEqual(back, u)
        let bad = #"{"r":"k","t":"f","reason":"stop","pt":1,"ct":1,"queue":1,"total":1,"up":"a","ud":"[1]"}"#
        XCTAssertThrowsError(try CompletionWire.decodeEvent(Array(bad.utf8)), "details must be an object")
    }

    func testTheOperatorsDeniedFieldsAndChoicesCap() throws {
        var p = ParameterPolicy(defaultModel: "builtin", knownModels: ["builtin", "gpt"], maxTokensCap: 100)
        p.upstreamModels = ["gpt"]
        p.deniedFields = ["service_tier", "store"]
        p.choicesCap = 2
        let parser = CompletionRequestParser(policy: p)
        func parse(_ s: String) throws(APIError) -> CompletionRequest { try parser.parse(try! JSONParser.parse(s), flavor: .chat, newID: { "i" }) }
        let m = #""model":"gpt","messages":[{"role":"user","content":"x"}]"#
        XCTAssertThrowsError(try parse(#"{\#(m),"service_tier":"priority"}"#)) { e in XCTAssertEqual((e as? APIError)?.field, "service_tier") }
        XCTAssertThrowsError(try parse(#"{\#(m),"n":3}"#)) { e in XCTAssertEqual((e as? APIError)?.field, "n") }
        XCTAssertNoThrow(try parse(#"{\#(m),"n":2,"store":null}"#), "null is as good as absent")
    }

    func testRawMembersSpliceACompactObjectsFieldsOrNothing() {
        var w = JSONWriter()
        w.beginObject()
        w.key("id"); w.string("x")
        for member in [#"{"a":1,"b":[2]}"#, "{}", "[1]", "", #"{"c":null}"#] { w.rawMembers(of: member) }
        w.endObject()
        XCTAssertEqual(w.string, #"{"id":"x","a":1,"b":[2],"c":null}"#)
    }
}
