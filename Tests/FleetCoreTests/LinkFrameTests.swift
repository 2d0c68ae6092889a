import Domain
import FleetCore
import JSON
import XCTest

/// Decodes one encoded frame (length prefix, type, payload) after checking its length prefix.
private func decodeEncoded(_ bytes: [UInt8], file: StaticString = #filePath, line: UInt = #line) throws -> LinkFrame {
    XCTAssertGreaterThanOrEqual(bytes.count, 5, file: file, line: line)
    let length = bytes.withUnsafeBytes { LinkFrame.u32($0, 0) }
    XCTAssertEqual(Int(length), bytes.count - 4, "length prefix", file: file, line: line)
    return try Array(bytes[5...]).withUnsafeBytes { p in try LinkFrame.decode(kind: bytes[4], payload: p) }
}

private func decodeFrame(kind: UInt8, _ payload: [UInt8]) throws -> LinkFrame {
    try payload.withUnsafeBytes { p in try LinkFrame.decode(kind: kind, payload: p) }
}

/// Reads `chunks` with one reader; returns the frames handed out (type and a copy of the payload).
/// After `stopAfter` frames the body returns false and no more is read (the link would close).
private func readFrames(_ chunks: [ArraySlice<UInt8>], maxFrameBytes: Int = LinkFrame.maxFrameBytes,
                        stopAfter: Int = .max) throws -> [(UInt8, [UInt8])] {
    var reader = LinkFrameReader()
    var frames: [(UInt8, [UInt8])] = []
    for chunk in chunks where frames.count < stopAfter {
        try chunk.withUnsafeBytes { p in
            try reader.read(p, maxFrameBytes: { maxFrameBytes }) { kind, payload in
                XCTAssertLessThan(frames.count, stopAfter, "a frame after the body said stop")
                frames.append((kind, Array(payload)))
                return frames.count < stopAfter
            }
        }
    }
    return frames
}

private func decodeAll(_ frames: [(UInt8, [UInt8])]) throws -> [LinkFrame] {
    try frames.map { try decodeFrame(kind: $0.0, $0.1) }
}

private func header(_ length: Int, _ kind: UInt8) -> [UInt8] {
    [UInt8(truncatingIfNeeded: length >> 24), UInt8(truncatingIfNeeded: length >> 16),
     UInt8(truncatingIfNeeded: length >> 8), UInt8(truncatingIfNeeded: length), kind]
}

private let nonce = (0..<16).map { UInt8($0) }
private let mac = (0..<32).map { UInt8(200 &+ $0) }

/// The frames' encoding and decoding, one frame at a time.
final class LinkFrameTests: XCTestCase {
    static let everyKind: [LinkFrame] = [
        .challenge(nonce: nonce),
        .hello(worker: "worker-1", gateway: "gateway-a", nonce: nonce, mac: mac),
        .hello(worker: "wörker-世界", gateway: "gä😀", nonce: nonce, mac: mac),
        .hello(worker: "", gateway: "", nonce: nonce, mac: mac),
        .hello(worker: String(repeating: "w", count: 255), gateway: String(repeating: "é", count: 127), nonce: nonce, mac: mac),
        .welcome(mac: mac),
        .ping,
        .delta(id: 0, index: 0, text: []),
        .delta(id: 7, index: 42, text: Array("Hello".utf8)),
        .delta(id: .max, index: .max, text: Array(" wörld 😀".utf8)),
        .message(id: 3, json: Array(#"{"r":"3:abc:r1","t":"k"}"#.utf8)),
        .message(id: .max, json: []),
        .cancel(id: 0),
        .cancel(id: 0xdead_beef),
    ]

    func testEveryFrameKindRoundTrips() throws {
        var kinds = Set<UInt8>()
        for frame in Self.everyKind {
            let bytes = frame.bytes
            kinds.insert(bytes[4])
            XCTAssertEqual(try decodeEncoded(bytes), frame)
            // Appending keeps what the buffer held.
            var out: [UInt8] = [9, 9]
            frame.append(to: &out)
            XCTAssertEqual(out, [9, 9] + bytes)
        }
        XCTAssertEqual(kinds, [1, 2, 3, 4, 10, 11, 20], "every kind is covered")
        // A reader yields them all back, in order, from one buffer.
        let stream = Self.everyKind.flatMap(\.bytes)
        XCTAssertEqual(try decodeAll(readFrames([stream[...]])), Self.everyKind)
    }

    func testWireLayoutIsBigEndianLengthTypePayload() {
        XCTAssertEqual(LinkFrame.ping.bytes, [0, 0, 0, 1, 4])
        XCTAssertEqual(LinkFrame.cancel(id: 0x0102_0304).bytes, [0, 0, 0, 5, 20, 1, 2, 3, 4])
        XCTAssertEqual(LinkFrame.delta(id: 1, index: 2, text: [0x41]).bytes, [0, 0, 0, 10, 10, 0, 0, 0, 1, 0, 0, 0, 2, 0x41])
        XCTAssertEqual(LinkFrame.hello(worker: "w", gateway: "gg", nonce: nonce, mac: mac).bytes,
                       header(1 + 2 + 1 + 2 + 16 + 32, 2) + [1, 0x77, 2, 0x67, 0x67] + nonce + mac)
    }

    func testAppendDeltaMatchesTheDeltaFrame() throws {
        for text in ["Hello", "", " ", "wörld", "世界", "😀 and 👩‍👩‍👧", "e\u{301}", "\u{0}nul"] {
            for (id, index) in [(UInt32(0), 0), (5, 17), (.max, Int(UInt32.max))] {
                var out: [UInt8] = [1, 2, 3]
                LinkFrame.appendDelta(id: id, index: index, text: text, to: &out)
                let frame = LinkFrame.delta(id: id, index: UInt32(index), text: Array(text.utf8))
                XCTAssertEqual(out, [1, 2, 3] + frame.bytes, "\(text)")
                guard case .delta(let i, let n, let t) = try decodeEncoded(Array(out[3...])) else { return XCTFail() }
                XCTAssertEqual(i, id)
                XCTAssertEqual(Int(n), index)
                XCTAssertEqual(String(decoding: t, as: UTF8.self), text)
            }
        }
    }

    func testAppendMessageDecodesBackToTheRelayMessage() throws {
        let accepted = RelayMessage.event(requestID: "3:abc:r1", .accepted(requestID: "r1", model: "builtin", created: 1_796_000_000),
                                          worker: "w")
        var out: [UInt8] = []
        var scratch = JSONWriter()
        LinkFrame.appendMessage(id: 9, accepted, to: &out, scratch: &scratch)
        let first = out.count
        // The scratch writer is reused: the second message is not polluted by the first.
        LinkFrame.appendMessage(id: 10, .abort(requestID: "3:abc:r2"), to: &out, scratch: &scratch)
        XCTAssertEqual(Array(out[..<first]), LinkFrame.message(id: 9, json: accepted.bytes).bytes)

        let frames = try decodeAll(readFrames([out[...]]))
        XCTAssertEqual(frames.count, 2)
        guard case .message(9, let json) = frames[0] else { return XCTFail("\(frames[0])") }
        guard case .event(let key, .accepted(let id, let model, let created), let worker) = try RelayMessage.decode(json) else {
            return XCTFail()
        }
        XCTAssertEqual(key, "3:abc:r1")
        XCTAssertEqual(id, "r1")
        XCTAssertEqual(model, "builtin")
        XCTAssertEqual(created, 1_796_000_000)
        XCTAssertEqual(worker, "w")
        guard case .message(10, let json2) = frames[1], case .abort("3:abc:r2") = try RelayMessage.decode(json2) else {
            return XCTFail("\(frames[1])")
        }
    }

    func testMalformedFramesThrow() {
        func refused(_ kind: UInt8, _ payload: [UInt8], _ what: String, line: UInt = #line) {
            XCTAssertThrowsError(try decodeFrame(kind: kind, payload), what, line: line) { error in
                XCTAssertTrue(error is LinkFrame.DecodeError, line: line)
            }
        }
        let hello = Array(LinkFrame.hello(worker: "worker", gateway: "gw", nonce: nonce, mac: mac).bytes[5...])
        XCTAssertNoThrow(try decodeFrame(kind: 2, hello))
        refused(2, [], "empty hello")
        refused(2, Array(hello.dropLast()), "hello one byte short")
        refused(2, hello + [0], "hello one byte long")
        refused(2, [6] + Array("work".utf8), "hello truncated in the worker")
        refused(2, [0], "hello without a gateway length")
        refused(2, [200] + Array(hello[1...]), "hello whose worker length runs past its end")
        var wrongGateway = hello
        wrongGateway[1 + 6] = 3  // gateway length 3, one more than there is before the nonce
        refused(2, wrongGateway, "hello with a wrong gateway length")
        // A hello with a nonce or mac of another size is refused by its length.
        refused(2, Array(LinkFrame.hello(worker: "w", gateway: "g", nonce: Array(nonce.dropLast()), mac: mac).bytes[5...]), "short nonce")
        refused(2, Array(LinkFrame.hello(worker: "w", gateway: "g", nonce: nonce, mac: mac + [0]).bytes[5...]), "long mac")

        // Names that are not UTF-8 (found by FuzzLink: decoded lossily, they re-encoded to other
        // bytes than the worker signed, and 100 bytes of 0xFF grew past the 255 a name may take).
        refused(2, [1, 0xff, 1, 0x67] + nonce + mac, "hello whose worker is not UTF-8")
        refused(2, [1, 0x77, 2, 0xf0, 0x00] + nonce + mac, "hello whose gateway is not UTF-8")
        refused(2, [100] + [UInt8](repeating: 0xff, count: 100) + [0] + nonce + mac, "hello of 100 bytes 0xFF")
        refused(2, [2] + Array("é".utf8.prefix(1)) + [0x41, 0] + nonce + mac, "hello whose worker is cut in a character")

        XCTAssertNoThrow(try decodeFrame(kind: 1, nonce))
        refused(1, Array(nonce.dropLast()), "challenge nonce of 15 bytes")
        refused(1, nonce + [0], "challenge nonce of 17 bytes")
        refused(1, [], "challenge without a nonce")
        refused(3, Array(mac.dropLast()), "welcome mac of 31 bytes")
        refused(3, mac + [1], "welcome mac of 33 bytes")
        refused(4, [0], "ping with a payload")
        refused(10, [0, 0, 0, 1, 0, 0, 0], "delta of 7 bytes")
        refused(11, [0, 0, 0], "message of 3 bytes")
        refused(20, [0, 0, 0], "cancel of 3 bytes")
        refused(20, [0, 0, 0, 0, 0], "cancel of 5 bytes")
        for kind: UInt8 in [0, 5, 9, 12, 19, 21, 99, 255] {
            refused(kind, [], "unknown type \(kind)")
            refused(kind, [0, 0, 0, 0], "unknown type \(kind) with a payload")
        }
    }
}

/// Cutting a byte stream into frames, however it arrives.
final class LinkFrameReaderTests: XCTestCase {
    let three: [LinkFrame] = [
        .delta(id: 1, index: 0, text: Array("Hé😀".utf8)),
        .message(id: 2, json: Array(#"{"r":"3:abc:r1","t":"x"}"#.utf8)),
        .cancel(id: 3),
    ]

    func testEverySplitPointYieldsTheSameFrames() throws {
        let stream = three.flatMap(\.bytes)
        for i in 0...stream.count {
            XCTAssertEqual(try decodeAll(readFrames([stream[..<i], stream[i...]])), three, "split at \(i)")
            for j in i...stream.count {
                XCTAssertEqual(try decodeAll(readFrames([stream[..<i], stream[i..<j], stream[j...]])), three, "split at \(i), \(j)")
            }
        }
        XCTAssertEqual(try decodeAll(readFrames(stream.indices.map { stream[$0...$0] })), three, "byte by byte")
        XCTAssertEqual(try decodeAll(readFrames([[], stream[...], []])), three, "with empty reads around")
    }

    func testAnIncompleteFrameWaitsForTheRest() throws {
        let stream = three.flatMap(\.bytes)
        var reader = LinkFrameReader()
        var got: [LinkFrame] = []
        let collect: (UInt8, UnsafeRawBufferPointer) throws(LinkFrame.DecodeError) -> Bool = { kind, p in
            got.append(try LinkFrame.decode(kind: kind, payload: p))
            return true
        }
        try Array(stream.dropLast()).withUnsafeBytes { try reader.read($0, maxFrameBytes: { LinkFrame.maxFrameBytes }, collect) }
        XCTAssertEqual(got, Array(three.prefix(2)))
        try [stream.last!].withUnsafeBytes { try reader.read($0, maxFrameBytes: { LinkFrame.maxFrameBytes }, collect) }
        XCTAssertEqual(got, three)
    }

    func testFramesOverTheLimitThrow() throws {
        let limit = LinkFrame.maxHandshakeFrameBytes
        let atLimit = LinkFrame.message(id: 1, json: [UInt8](repeating: 0x20, count: limit - 5)).bytes
        let overLimit = LinkFrame.message(id: 1, json: [UInt8](repeating: 0x20, count: limit - 4)).bytes
        XCTAssertEqual(atLimit.count, 4 + limit)
        XCTAssertEqual(try readFrames([atLimit[...]], maxFrameBytes: limit).count, 1)
        XCTAssertThrowsError(try readFrames([overLimit[...]], maxFrameBytes: limit))
        // Refused as soon as the length is known, before the rest arrives, and when its header
        // itself comes in pieces.
        XCTAssertThrowsError(try readFrames([overLimit[..<4]], maxFrameBytes: limit))
        XCTAssertThrowsError(try readFrames([overLimit[..<2], overLimit[2..<4]], maxFrameBytes: limit))
        XCTAssertThrowsError(try readFrames([LinkFrame.ping.bytes[...] + overLimit[..<4]], maxFrameBytes: limit))
        XCTAssertThrowsError(try readFrames([header(LinkFrame.maxFrameBytes + 1, 10)[...]]))
        XCTAssertThrowsError(try readFrames([[0xff, 0xff, 0xff, 0xff, 10]]))
        XCTAssertEqual(try readFrames([overLimit[...]], maxFrameBytes: LinkFrame.maxFrameBytes).count, 1)
    }

    func testZeroLengthFramesThrow() {
        XCTAssertThrowsError(try readFrames([[0, 0, 0, 0]]))
        XCTAssertThrowsError(try readFrames([[0, 0], [0, 0]]))
        XCTAssertThrowsError(try readFrames([LinkFrame.ping.bytes[...] + [0, 0, 0, 0, 4]]))
        let ping = LinkFrame.ping.bytes
        XCTAssertThrowsError(try readFrames([ping[..<3], ping[3...] + [0, 0, 0, 0]]))
    }

    func testTheLimitIsAskedBeforeEachFrame() throws {
        // Small until the first frame (the hello) is handled, then full, as a link does.
        let hello = LinkFrame.hello(worker: "w", gateway: "g", nonce: nonce, mac: mac).bytes
        let big = LinkFrame.message(id: 1, json: [UInt8](repeating: 0x20, count: 4000)).bytes
        let stream = hello + big
        for i in 0...stream.count {
            var reader = LinkFrameReader()
            var limit = LinkFrame.maxHandshakeFrameBytes
            var kinds: [UInt8] = []
            for chunk in [stream[..<i], stream[i...]] {
                try chunk.withUnsafeBytes { p in
                    try reader.read(p, maxFrameBytes: { limit }) { kind, _ in
                        kinds.append(kind)
                        limit = LinkFrame.maxFrameBytes
                        return true
                    }
                }
            }
            XCTAssertEqual(kinds, [2, 11], "split at \(i)")
        }
        // Without the change the big frame is refused.
        XCTAssertThrowsError(try readFrames([stream[...]], maxFrameBytes: LinkFrame.maxHandshakeFrameBytes))
    }

    func testBodyReturningFalseStopsReading() throws {
        let stream = three.flatMap(\.bytes)
        XCTAssertEqual(try decodeAll(readFrames([stream[...]], stopAfter: 1)), [three[0]])
        XCTAssertEqual(try decodeAll(readFrames([stream[...]], stopAfter: 2)), Array(three.prefix(2)))
        // Also when the frame that stops was gathered across reads: what follows it in that read is
        // not handed out.
        let first = three[0].bytes.count
        XCTAssertEqual(try decodeAll(readFrames([stream[..<(first - 1)], stream[(first - 1)...]], stopAfter: 1)), [three[0]])
        for i in 0...stream.count {
            XCTAssertEqual(try readFrames([stream[..<i], stream[i...]], stopAfter: 1).count, 1, "split at \(i)")
        }
    }

    func testAnErrorFromBodyIsThrown() {
        let stream = three.flatMap(\.bytes)
        for i in [0, 3, 10, stream.count] {
            var reader = LinkFrameReader()
            var calls = 0
            XCTAssertThrowsError(try {
                for chunk in [stream[..<i], stream[i...]] {
                    try chunk.withUnsafeBytes { p in
                        try reader.read(p, maxFrameBytes: { LinkFrame.maxFrameBytes }) { (_, payload) throws(LinkFrame.DecodeError) -> Bool in
                            calls += 1
                            _ = try LinkFrame.decode(kind: 99, payload: payload)  // throws
                            return true
                        }
                    }
                }
            }()) { error in
                XCTAssertTrue(error is LinkFrame.DecodeError)
            }
            XCTAssertEqual(calls, 1, "split at \(i)")
        }
    }
}

/// The link's HMAC helpers, on a fake MAC.
final class LinkAuthTests: XCTestCase {
    /// Deterministic, 32 bytes, different for different inputs (one mixed FNV-1a per output byte).
    static let fakeMAC: @Sendable ([UInt8]) -> [UInt8] = { data in
        (0..<32).map { lane in
            var h: UInt64 = 0xcbf2_9ce4_8422_2325 ^ UInt64(lane)
            for b in data { h = (h ^ UInt64(b)) &* 0x100_0000_01b3 }
            // splitmix64's finalizer, so the last bytes reach every output bit.
            h = (h ^ UInt64(data.count) ^ (h >> 30)) &* 0xbf58_476d_1ce4_e5b9
            h = (h ^ (h >> 27)) &* 0x94d0_49bb_1331_11eb
            return UInt8(truncatingIfNeeded: h ^ (h >> 31))
        }
    }
    let auth = LinkAuth(mac: fakeMAC, random: { [UInt8](repeating: 7, count: $0) })

    func testEqual() {
        XCTAssertFalse(LinkAuth.equal([], []), "an empty MAC (libcrypto failed) matches nothing")
        XCTAssertTrue(LinkAuth.equal(mac, mac))
        XCTAssertFalse(LinkAuth.equal(mac, Array(mac.dropLast())))
        XCTAssertFalse(LinkAuth.equal(Array(mac.dropLast()), mac))
        XCTAssertFalse(LinkAuth.equal([], [0]))
        for i in mac.indices {
            var other = mac
            other[i] ^= 0x80
            XCTAssertFalse(LinkAuth.equal(mac, other), "differs at \(i)")
            other[i] ^= 0x81
            XCTAssertFalse(LinkAuth.equal(mac, other), "differs at \(i)")
        }
    }

    func testHelloMACDiffersWhenAnyInputChanges() {
        let base = auth.helloMAC(challenge: nonce, worker: "worker-1", gateway: "gateway-a", nonce: mac.prefix(16).map { $0 })
        XCTAssertEqual(base.count, 32)
        XCTAssertEqual(base, auth.helloMAC(challenge: nonce, worker: "worker-1", gateway: "gateway-a", nonce: mac.prefix(16).map { $0 }),
                       "deterministic")
        var otherChallenge = nonce
        otherChallenge[15] ^= 1
        let variants = [
            auth.helloMAC(challenge: otherChallenge, worker: "worker-1", gateway: "gateway-a", nonce: mac.prefix(16).map { $0 }),
            auth.helloMAC(challenge: nonce, worker: "worker-2", gateway: "gateway-a", nonce: mac.prefix(16).map { $0 }),
            auth.helloMAC(challenge: nonce, worker: "worker-1", gateway: "gateway-b", nonce: mac.prefix(16).map { $0 }),
            auth.helloMAC(challenge: nonce, worker: "worker-1", gateway: "gateway-a", nonce: mac.suffix(16).map { $0 }),
            // The same bytes cut differently between worker and gateway.
            auth.helloMAC(challenge: nonce, worker: "worker-1g", gateway: "ateway-a", nonce: mac.prefix(16).map { $0 }),
            auth.helloMAC(challenge: nonce, worker: "worker-", gateway: "1gateway-a", nonce: mac.prefix(16).map { $0 }),
        ]
        for (i, v) in variants.enumerated() {
            XCTAssertFalse(LinkAuth.equal(base, v), "variant \(i)")
        }
        XCTAssertEqual(Set(variants.map { $0 }).count, variants.count)
        // Hello and welcome never sign the same bytes.
        XCTAssertNotEqual(auth.welcomeMAC(nonce: nonce, gateway: "g"), auth.helloMAC(challenge: nonce, worker: "", gateway: "g", nonce: []))
    }

    func testWelcomeMACDiffersWhenAnyInputChanges() {
        let base = auth.welcomeMAC(nonce: nonce, gateway: "gateway-a")
        XCTAssertEqual(base, auth.welcomeMAC(nonce: nonce, gateway: "gateway-a"))
        XCTAssertNotEqual(base, auth.welcomeMAC(nonce: Array(nonce.reversed()), gateway: "gateway-a"))
        XCTAssertNotEqual(base, auth.welcomeMAC(nonce: nonce, gateway: "gateway-b"))
    }

    func testWhatHelloSigns() {
        // The signed bytes are the contract between a worker and a gateway of other builds.
        let recording = LinkAuth(mac: { $0 }, random: { [UInt8](repeating: 0, count: $0) })
        XCTAssertEqual(recording.helloMAC(challenge: [1, 2], worker: "wö", gateway: "g", nonce: [3]),
                       Array("playground-link-hello".utf8) + [1, 2, 3] + Array("wö".utf8) + [1, 0x67, 3])
        XCTAssertEqual(recording.welcomeMAC(nonce: [4, 5], gateway: "gw"), Array("playground-link-welcome".utf8) + [4, 5] + Array("gw".utf8))
        XCTAssertEqual(recording.random(3), [0, 0, 0])
    }
}
