import Domain
import JSON
import TestSupport
import XCTest

/// The real API on a port-0 node (`APITestNode`: the engine over LocalFleet, presets and API keys
/// on in-memory ports): REST, SSE, the WebSocket envelope, authentication, limits and presets,
/// tested in Swift as well as by the Python end-to-end suite.
final class LiveAPITests: XCTestCase {
    let alice = Identity(userID: "alice", orgID: nil, keyID: 1)
    let bob = Identity(userID: "bob", orgID: nil, keyID: 2)

    func json(_ r: ParsedResponse) throws -> JSONObject {
        guard let o = try JSONParser.parse(r.body).objectValue else { throw TestError("not an object: \(String(decoding: r.body, as: UTF8.self))") }
        return o
    }

    func testACompletionAnswersWholeAndStreamsOneEventPerToken() throws {
        let node = try APITestNode()
        let whole = try node.request("POST", "/v1/completions", body: #"{"prompt": "The sea", "max_tokens": 5, "seed": 3}"#)
        XCTAssertEqual(whole.status, 200, String(decoding: whole.body, as: UTF8.self))
        let o = try json(whole)
        XCTAssertEqual(o["usage"]?.objectValue?["completion_tokens"]?.intValue, 5)
        let text = o["choices"]?.arrayValue?.first?.objectValue?["text"]?.stringValue ?? ""
        XCTAssertFalse(text.isEmpty)

        let stream = try node.request("POST", "/v1/completions", body: #"{"prompt": "The sea", "max_tokens": 5, "seed": 3, "stream": true}"#)
        XCTAssertEqual(stream.status, 200)
        XCTAssertEqual(stream.header("content-type")?.hasPrefix("text/event-stream"), true)
        let events = String(decoding: stream.body, as: UTF8.self).components(separatedBy: "\n\n").filter { $0.hasPrefix("data: ") }
        XCTAssertEqual(events.last, "data: [DONE]")
        XCTAssertEqual(events.count, 5 + 1 + 1, "one event per token, the final chunk, [DONE]")
        // Same seed, same text, whichever way it was asked for.
        let streamed = events.dropLast().compactMap { e -> String? in
            (try? JSONParser.parse(Array(e.dropFirst(6).utf8)))?.objectValue?["choices"]?.arrayValue?.first?.objectValue?["text"]?.stringValue
        }.joined()
        XCTAssertEqual(streamed, text)
    }

    func testAParameterErrorNamesItsField() throws {
        let node = try APITestNode()
        let r = try node.request("POST", "/v1/completions", body: #"{"prompt": "x", "temperature": 9}"#)
        XCTAssertEqual(r.status, 400)
        let e = try json(r)["error"]?.objectValue
        XCTAssertEqual(e?["code"]?.stringValue, "invalid_request")
        XCTAssertEqual(e?["param"]?.stringValue, "temperature")
        let unknown = try node.request("GET", "/v1/nothing-here")
        XCTAssertEqual(unknown.status, 404)
    }

    func testAuthenticationAndRevocation() throws {
        let node = try APITestNode(keys: ["key-a": alice])
        let body = #"{"prompt": "x", "max_tokens": 1}"#
        XCTAssertEqual(try node.request("POST", "/v1/completions", body: body).status, 401)
        XCTAssertEqual(try node.request("POST", "/v1/completions", body: body, headers: ["Authorization": "Bearer wrong"]).status, 401)
        XCTAssertEqual(try node.request("POST", "/v1/completions", body: body, headers: ["Authorization": "Bearer key-a"]).status, 200)
        node.identities?.revoke(key: "key-a")
        XCTAssertEqual(try node.request("POST", "/v1/completions", body: body, headers: ["Authorization": "Bearer key-a"]).status, 401)
    }

    func testTheRateLimitRefusesWithRetryAfter() throws {
        let node = try APITestNode(quota: Quota(requestsPerMinute: 2, concurrency: 2))
        let body = #"{"prompt": "x", "max_tokens": 1}"#
        XCTAssertEqual(try node.request("POST", "/v1/completions", body: body).status, 200)
        let second = try node.request("POST", "/v1/completions", body: body)
        XCTAssertEqual(second.status, 200)
        XCTAssertEqual(second.header("x-ratelimit-remaining-requests"), "0")
        let third = try node.request("POST", "/v1/completions", body: body)
        XCTAssertEqual(third.status, 429)
        XCTAssertEqual(try json(third)["error"]?.objectValue?["code"]?.stringValue, "rate_limit_exceeded")
        XCTAssertNotNil(third.header("retry-after").flatMap(Int.init), "a refusal says when to retry")
    }

    func testPresetsAreOwnedFoundDespiteTyposAndRunWithNewInput() throws {
        let node = try APITestNode(keys: ["key-a": alice, "key-b": bob])
        let a = ["Authorization": "Bearer key-a"], b = ["Authorization": "Bearer key-b"]
        let made = try node.request("POST", "/v1/presets", body: #"{"name": "French translator", "tags": ["language"], "prompt": "Translate: {{input}}", "parameters": {"max_tokens": 4, "seed": 1}}"#, headers: a)
        XCTAssertEqual(made.status, 201, String(decoding: made.body, as: UTF8.self))
        let id = try json(made)["id"]?.stringValue ?? ""
        XCTAssertEqual(try node.request("POST", "/v1/presets", body: #"{"name": "french TRANSLATOR", "prompt": "x"}"#, headers: a).status, 409,
                       "names are unique per user, ignoring case")
        XCTAssertEqual(try node.request("POST", "/v1/presets", body: #"{"name": "French translator", "prompt": "x"}"#, headers: b).status, 201,
                       "another user may use the same name")
        let found = try json(try node.request("GET", "/v1/presets?query=frnch", headers: a))
        XCTAssertEqual(found["data"]?.arrayValue?.compactMap { $0.objectValue?["id"]?.stringValue }, [id], "a typo still finds it, and only hers")
        XCTAssertEqual(try node.request("GET", "/v1/presets/\(id)", headers: b).status, 404, "someone else's preset is not found")
        let ran = try node.request("POST", "/v1/completions", body: #"{"preset_id": "\#(id)", "input_context": "good morning"}"#, headers: a)
        XCTAssertEqual(ran.status, 200, String(decoding: ran.body, as: UTF8.self))
        XCTAssertEqual(try json(ran)["usage"]?.objectValue?["completion_tokens"]?.intValue, 4, "the preset's parameters apply")
        XCTAssertEqual(try node.request("DELETE", "/v1/presets/\(id)", headers: a).status, 200)
        XCTAssertEqual(try node.request("GET", "/v1/presets/\(id)", headers: a).status, 404)
    }

    func testPresetsDegradeClearlyWhenTheStoreIsDown() throws {
        let node = try APITestNode()
        node.presets.down.store(true, ordering: .relaxed)
        let r = try node.request("GET", "/v1/presets")
        XCTAssertEqual(r.status, 503)
        XCTAssertEqual(try json(r)["error"]?.objectValue?["code"]?.stringValue, "presets_degraded")
        XCTAssertNotNil(r.header("retry-after"))
        // Export, import and versions come from the store alone: refused clearly, never half done.
        let id = "750458cb-48cf-4d0f-a94f-80d32f374b31"
        for (method, path, body) in [("GET", "/v1/presets/export", nil), ("POST", "/v1/presets/import", #"{"presets": [{"name": "n", "prompt": "p"}]}"#),
                                     ("GET", "/v1/presets/\(id)/versions", nil), ("GET", "/v1/presets/\(id)/versions/1", nil),
                                     ("POST", "/v1/presets/\(id)/versions/1/restore", nil)] as [(String, String, String?)] {
            let d = try node.request(method, path, body: body)
            XCTAssertEqual(d.status, 503, path)
            XCTAssertEqual(try json(d)["error"]?.objectValue?["code"]?.stringValue, "presets_degraded", path)
        }
        XCTAssertEqual(node.presets.count, 0, "nothing imported")
        XCTAssertEqual(try node.request("POST", "/v1/completions", body: #"{"prompt": "x", "max_tokens": 1}"#).status, 200,
                       "completions go on without the preset store")
    }

    func testTheWebSocketEnvelopeStreamsEveryToken() throws {
        let node = try APITestNode()
        let ws = try WSTestClient(port: node.port, path: "/v1/ws", timeoutMs: 5000)
        try ws.sendText(#"{"id": 7, "method": "POST", "path": "/v1/completions", "body": {"prompt": "The sea", "max_tokens": 6}}"#)
        var types: [String] = []
        var counted: Int?
        while types.last != "done" && types.last != "error" && types.count < 50 {
            guard let f = ws.readFrame(), f.opcode == 1, let o = try? JSONParser.parse(f.payload).objectValue else { break }
            XCTAssertEqual(o["id"]?.intValue, 7)
            types.append(o["type"]?.stringValue ?? "?")
            counted = o["usage"]?.objectValue?["completion_tokens"]?.intValue ?? counted
        }
        XCTAssertEqual(types.first, "accepted")
        XCTAssertEqual(types.last, "done")
        // Unseeded, the answer may stop before 6 tokens: as many frames as the answer counts.
        let deltas = types.filter { $0 == "delta" }.count
        XCTAssertEqual(deltas, counted, "one frame per token")
        XCTAssertTrue((1...6).contains(deltas), "\(deltas)")
    }
}
