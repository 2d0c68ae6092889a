import Domain
import JSON
import XCTest

/// What crosses nodes decodes to exactly what was encoded.
final class CompletionWireTests: XCTestCase {
    func testRequestsRoundTrip() throws {
        for seed in [nil, UInt64(0), UInt64.max, UInt64(1) << 63] {
            let p = GenerationParameters(model: "builtin", temperature: 0.7, topP: 0.25, maxTokens: 2048, stop: ["\n", "é😀", "\u{0}"],
                                         presencePenalty: -2, frequencyPenalty: 1.5, seed: seed)
            var r = CompletionRequest(requestID: "cmpl-x:1", clientSuppliedID: true, prompt: "Say \"hi\"\n\u{0}😀", parameters: p,
                                      stream: true, flavor: .chat)
            r.ownerID = "alice"
            r.keyID = 42
            r.fence = Int64.max
            r.presetID = seed == nil ? nil : "750458cb-48cf-4d0f-a94f-80d32f374b31"
            let back = try CompletionWire.decodeRequest(CompletionWire.encode(r))
            XCTAssertEqual(back.requestID, r.requestID)
            XCTAssertEqual(back.clientSuppliedID, true)
            XCTAssertEqual(back.prompt, r.prompt)
            XCTAssertEqual(back.parameters, r.parameters)
            XCTAssertEqual(back.stream, true)
            XCTAssertEqual(back.flavor, .chat)
            XCTAssertEqual(back.ownerID, "alice")
            XCTAssertEqual(back.keyID, 42)
            XCTAssertEqual(back.fence, Int64.max)
            XCTAssertEqual(back.presetID, r.presetID)
        }
    }

    func testEventsRoundTrip() throws {
        let events: [CompletionEvent] = [
            .accepted(requestID: "r1", model: "builtin", created: 1_796_000_000),
            .delta(index: 0, text: ""), .delta(index: 17, text: " wörld\n\"😀\""),
            .done(.length, Usage(promptTokens: 3, completionTokens: 16), Timings(queueMs: 0.25, ttftMs: 12.5, totalMs: 99, upstream: "builtin")),
            .done(.cancelled, Usage(promptTokens: 0, completionTokens: 0), Timings(queueMs: 1, ttftMs: nil, totalMs: 1, upstream: "x")),
            .failed(APIError(.generationInterrupted, "worker died", retryAfterMs: 100), tokensSoFar: 7),
            .failed(APIError(.invalidRequest, "bad", field: "temperature"), tokensSoFar: 0),
        ]
        for e in events {
            var w = JSONWriter()
            CompletionWire.encode(e, requestID: "req-9", into: &w)
            let (id, back) = try CompletionWire.decodeEvent(w.bytes)
            XCTAssertEqual(id, "req-9")
            var w2 = JSONWriter()
            CompletionWire.encode(back, requestID: id, into: &w2)
            XCTAssertEqual(w2.bytes, w.bytes, "\(e)")
        }
    }

    func testMalformedIsRefused() {
        for bad in ["", "[]", #"{"r":"x"}"#, #"{"r":"x","t":"z"}"#, #"{"r":"x","t":"d","i":"1","x":"a"}"#,
                    #"{"r":"x","t":"e","code":"nope","msg":"m","n":0}"#] {
            XCTAssertThrowsError(try CompletionWire.decodeEvent(Array(bad.utf8)), bad)
        }
        XCTAssertThrowsError(try CompletionWire.decodeRequest(Array(#"{"id":"x"}"#.utf8)))
    }

    func testJobsCarryTheirReplyChannelAndExpiry() throws {
        var r = CompletionRequest(requestID: "j1", clientSuppliedID: false, prompt: "hi",
                                  parameters: GenerationParameters(model: "builtin"), stream: true, flavor: .chat)
        r.ownerID = "u7"
        let bytes = CompletionWire.encode(r, job: .init(replyTo: "pg:gw:node-a", expiresAtMs: 1_796_000_000_123))
        let (back, job) = try CompletionWire.decodeJob(bytes)
        XCTAssertEqual(job, .init(replyTo: "pg:gw:node-a", expiresAtMs: 1_796_000_000_123))
        XCTAssertEqual(back.requestID, "j1")
        XCTAssertEqual(back.ownerID, "u7")
        XCTAssertEqual(back.flavor, .chat)
        // A bare request is not a job (no reply channel).
        XCTAssertThrowsError(try CompletionWire.decodeJob(CompletionWire.encode(r)))
    }

    func testRelayMessagesRoundTrip() throws {
        let cases: [RelayMessage] = [
            .event(requestID: "r1", .accepted(requestID: "r1", model: "builtin", created: 5), worker: "w-1"),
            .event(requestID: "r1", .delta(index: 3, text: "tok"), worker: nil),
            .keepalive(requestID: "r2"),
            .cancel(requestID: "r3", owner: "alice"),
            .abort(requestID: "r4"),
            .follow(requestID: "5:alice:r5", replyTo: "pg:gw:b"),
        ]
        for m in cases {
            let back = try RelayMessage.decode(m.bytes)
            XCTAssertEqual(back.bytes, m.bytes)
            switch (m, back) {
            case (.event(let a, _, let wa), .event(let b, _, let wb)): XCTAssertEqual(a, b); XCTAssertEqual(wa, wb)
            case (.keepalive(let a), .keepalive(let b)): XCTAssertEqual(a, b)
            case (.cancel(let a, let oa), .cancel(let b, let ob)): XCTAssertEqual(a, b); XCTAssertEqual(oa, ob)
            case (.abort(let a), .abort(let b)): XCTAssertEqual(a, b)
            case (.follow(let a, let ta), .follow(let b, let tb)): XCTAssertEqual(a, b); XCTAssertEqual(ta, tb)
            default: XCTFail("\(m) came back as \(back)")
            }
        }
        XCTAssertEqual(StreamKey.parse(StreamKey.make(owner: "a:b", requestID: "x:y"))?.owner, "a:b")
        XCTAssertEqual(StreamKey.parse(StreamKey.make(owner: "a:b", requestID: "x:y"))?.requestID, "x:y")
        XCTAssertNil(StreamKey.parse("9:ab:c"))
        XCTAssertNil(StreamKey.parse("nope"))
        for bad in ["{}", #"{"r":"x","t":"c"}"#, #"{"r":"x","t":"s"}"#, #"{"r":"x","t":"q"}"#, "[1]"] {
            XCTAssertThrowsError(try RelayMessage.decode(Array(bad.utf8)), bad)
        }
    }

    func testTheTokenFastPathReadsWhatTheDecoderReads() throws {
        let key = StreamKey.make(owner: "alice", requestID: "r-1")
        let accepted: [RelayMessage] = [
            .event(requestID: key, .delta(index: 0, text: " the"), worker: nil),
            .event(requestID: key, .delta(index: 12345, text: "wörld 😀"), worker: nil),
            .event(requestID: key, .delta(index: 7, text: ""), worker: nil),
            .keepalive(requestID: key),
        ]
        for m in accepted {
            let fast = try XCTUnwrap(RelayMessage.decodeTokenMessage(m.bytes), "\(m)")
            XCTAssertEqual(fast.bytes, try RelayMessage.decodeGeneral(m.bytes).bytes)
        }
        // Escapes, other kinds, extra fields, trailing bytes, leading zeros: left to the decoder.
        let declined: [[UInt8]] = [
            RelayMessage.event(requestID: key, .delta(index: 1, text: "say \"hi\"\n"), worker: nil).bytes,
            RelayMessage.event(requestID: key, .accepted(requestID: "r-1", model: "m", created: 1), worker: "w").bytes,
            RelayMessage.cancel(requestID: "r-1", owner: "alice").bytes,
            Array(#"{"r":"k","t":"d","i":1,"x":"a"} "#.utf8),
            Array(#"{"r":"k","t":"d","i":01,"x":"a"}"#.utf8),
            Array(#"{"r":"k","t":"d","i":1,"x":"a","y":2}"#.utf8),
            [0x7B, 0x22, 0x72, 0x22, 0x3A, 0x22, 0xFF, 0x22],
        ]
        for d in declined { XCTAssertNil(RelayMessage.decodeTokenMessage(d), String(decoding: d, as: UTF8.self)) }
        XCTAssertNotNil(try? RelayMessage.decode(declined[0]), "the decoder still reads escaped text")
    }
}
