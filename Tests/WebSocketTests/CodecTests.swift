import NetCore
import HTTP1
import WebSocket
import XCTest

/// Collects parser events as values.
enum Ev: Equatable {
    case header(WSFrameHeader)
    case payload([UInt8])
    case end
}

func events(_ bytes: [UInt8], expectMasked: Bool = true, pieces: Int? = nil) -> ([Ev], WSProtocolError?) {
    var parser = WSFrameParser(expectMasked: expectMasked)
    var out: [Ev] = []
    var err: WSProtocolError?
    var copy = bytes
    let step = pieces ?? max(1, bytes.count)
    var i = 0
    while i < copy.count || (i == 0 && copy.isEmpty) {
        let end = min(copy.count, i + step)
        err = copy.withUnsafeMutableBytes { p in
            parser.feed(UnsafeMutableRawBufferPointer(rebasing: p[i..<end])) { e in
                switch e {
                case .header(let h): out.append(.header(h))
                case .payload(let p): out.append(.payload(Array(p)))
                case .frameEnd: out.append(.end)
                }
                return true
            }
        }
        if err != nil || copy.isEmpty { break }
        i = end
    }
    return (coalesce(out), err)
}

/// Joins adjacent payload pieces so split and unsplit input compare equal.
func coalesce(_ evs: [Ev]) -> [Ev] {
    var out: [Ev] = []
    for e in evs {
        if case .payload(let p) = e, case .payload(let q)? = out.last {
            out[out.count - 1] = .payload(q + p)
        } else {
            out.append(e)
        }
    }
    return out
}

final class FrameCodecTests: XCTestCase {
    func testRoundTripAllLengthEncodingsAtEverySplit() {
        for n in [0, 1, 125, 126, 127, 65535, 65536, 70000] {
            let payload = (0..<n).map { UInt8(truncatingIfNeeded: $0 &* 31) }
            let frame = WSFrameEncoder.frame(opcode: .binary, payload: payload, maskKey: 0xA1B2C3D4)
            for piece in (n < 200 ? [1, 2, 3, 5, frame.count] : [1000, 4097, frame.count]) {
                let (evs, err) = events(frame, pieces: piece)
                XCTAssertNil(err)
                guard case .header(let h) = evs.first else { return XCTFail("no header for \(n)") }
                XCTAssertEqual(h.length, UInt64(n))
                XCTAssertEqual(h.opcode, .binary)
                XCTAssertTrue(h.fin)
                XCTAssertEqual(evs.last, .end)
                let body = evs.compactMap { e -> [UInt8]? in if case .payload(let p) = e { return p } else { return nil } }.joined()
                XCTAssertEqual(Array(body), payload, "length \(n), piece \(piece)")
            }
        }
    }

    func testServerFramesAreUnmaskedAndMinimal() {
        XCTAssertEqual(WSFrameEncoder.frame(opcode: .text, payload: Array("hi".utf8)), [0x81, 0x02, 0x68, 0x69])
        XCTAssertEqual(Array(WSFrameEncoder.frame(opcode: .binary, payload: [UInt8](repeating: 0, count: 126)).prefix(4)), [0x82, 126, 0, 126])
        XCTAssertEqual(Array(WSFrameEncoder.frame(opcode: .binary, payload: [UInt8](repeating: 0, count: 65536)).prefix(10)),
                       [0x82, 127, 0, 0, 0, 0, 0, 1, 0, 0])
    }

    func testRFCExampleMaskedHello() {
        // RFC 6455 §5.7: a single-frame masked text message "Hello".
        let (evs, err) = events([0x81, 0x85, 0x37, 0xfa, 0x21, 0x3d, 0x7f, 0x9f, 0x4d, 0x51, 0x58])
        XCTAssertNil(err)
        XCTAssertEqual(evs.dropFirst().first, .payload(Array("Hello".utf8)))
    }

    func testProtocolViolations() {
        let masked: (UInt8, UInt8) -> [UInt8] = { b0, b1 in [b0, b1 | 0x80, 0, 0, 0, 0] }
        let cases: [(String, [UInt8], Bool, UInt16)] = [
            ("unmasked client frame", [0x81, 0x00], true, 1002),
            ("masked server frame", [0x81, 0x80, 1, 2, 3, 4], false, 1002),
            ("rsv1", masked(0xC1, 0), true, 1002),
            ("rsv2", masked(0xA1, 0), true, 1002),
            ("rsv3", masked(0x91, 0), true, 1002),
            ("opcode 3", masked(0x83, 0), true, 1002),
            ("opcode 7", masked(0x87, 0), true, 1002),
            ("opcode 0xB", masked(0x8B, 0), true, 1002),
            ("opcode 0xF", masked(0x8F, 0), true, 1002),
            ("fragmented ping", masked(0x09, 0), true, 1002),
            ("ping of 126 bytes", [0x89, 0xFE, 0, 126], true, 1002),
            ("close of 127-length form", [0x88, 0xFF], true, 1002),
            ("64-bit length with MSB set", [0x82, 0xFF, 0x80, 0, 0, 0, 0, 0, 0, 0, 1, 2, 3, 4], true, 1002),
        ]
        for (name, bytes, expectMasked, code) in cases {
            let (_, err) = events(bytes, expectMasked: expectMasked)
            XCTAssertEqual(err?.code, code, name)
        }
    }

    func testUTF8ValidatorAgreesWithSwiftDecoder() {
        var rng = SystemRandomNumberGenerator()
        let interesting: [UInt8] = [0x00, 0x41, 0x7F, 0x80, 0xBF, 0xC0, 0xC1, 0xC2, 0xDF, 0xE0, 0xED, 0xEF, 0xF0, 0xF4, 0xF5, 0xFF, 0x9F, 0xA0, 0x8F, 0x90]
        for _ in 0..<20000 {
            let n = Int.random(in: 0..<12, using: &rng)
            let bytes = (0..<n).map { _ in Bool.random(using: &rng) ? interesting.randomElement(using: &rng)! : UInt8.random(in: 0...255, using: &rng) }
            let swiftSays = String(validating: bytes, as: UTF8.self) != nil
            XCTAssertEqual(UTF8Validator.isValid(bytes), swiftSays, "\(bytes.map { String($0, radix: 16) })")
            // Split anywhere: same answer, and failure is reported no later than the bad byte.
            var v = UTF8Validator()
            let cut = n == 0 ? 0 : Int.random(in: 0...n, using: &rng)
            let ok = bytes[0..<cut].withUnsafeBytes { v.feed($0) } && bytes[cut...].withUnsafeBytes { v.feed($0) } && v.isComplete
            XCTAssertEqual(ok, swiftSays)
        }
    }

    func testUTF8FailsFastOnFirstBadByte() {
        var v = UTF8Validator()
        XCTAssertTrue(([0xCE, 0xBA, 0xE1, 0xBD] as [UInt8]).withUnsafeBytes { v.feed($0) })  // valid prefix, sequence still open
        XCTAssertFalse(v.isComplete)
        XCTAssertFalse(([0x41] as [UInt8]).withUnsafeBytes { v.feed($0) }, "ASCII where a continuation byte is due")
        XCTAssertFalse(UTF8Validator.isValid([0xED, 0xA0, 0x80]), "surrogate")
        XCTAssertFalse(UTF8Validator.isValid([0xF4, 0x90, 0x80, 0x80]), "above U+10FFFF")
        XCTAssertFalse(UTF8Validator.isValid([0xC0, 0x80]), "overlong")
    }

    func testHandshakeAcceptValue() {
        // RFC 6455 §1.3 example.
        XCTAssertEqual(WebSocketHandshake.acceptValue(for: "dGhlIHNhbXBsZSBub25jZQ=="), "s3pPLMBiTxaQ9kYGzzhZRbK+xOo=")
    }

    func testBase64() {
        for n in 0..<40 {
            let bytes = (0..<n).map { UInt8(truncatingIfNeeded: $0 * 37 + 5) }
            XCTAssertEqual(Base64.decode(Base64.encode(bytes)), bytes)
        }
        XCTAssertEqual(Base64.encode(Array("foobar".utf8)), "Zm9vYmFy")
        XCTAssertNil(Base64.decode("abc"))
        XCTAssertNil(Base64.decode("ab=c"))
        XCTAssertNil(Base64.decode("a!bc"))
    }

    func testOriginPolicy() {
        let p = OriginPolicy(allowed: ["https://app.example"])
        XCTAssertTrue(p.permits(origin: nil, host: "h:1"), "non-browser clients send no Origin")
        XCTAssertTrue(p.permits(origin: "http://h:1", host: "h:1"), "same origin")
        XCTAssertTrue(p.permits(origin: "https://APP.example", host: "h:1"))
        XCTAssertFalse(p.permits(origin: "https://evil.example", host: "h:1"))
        XCTAssertFalse(p.permits(origin: "http://h:2", host: "h:1"))
        XCTAssertFalse(p.permits(origin: "null", host: "h:1"))
        XCTAssertTrue(OriginPolicy.any.permits(origin: "https://evil.example", host: "h:1"))
    }

    func testClosePayloadTruncatesOnCharacterBoundary() {
        let p = WSFrameEncoder.closePayload(code: 1000, reason: String(repeating: "é", count: 100))
        XCTAssertLessThanOrEqual(p.count, 125)
        XCTAssertTrue(UTF8Validator.isValid(Array(p[2...])))
    }
}

/// The message/close state machine, fed frames as bytes through the real parser.
final class StateMachineTests: XCTestCase {
    enum Out: Equatable {
        case message(WSOpcode, [UInt8])
        case pong([UInt8])
        case pongReceived
        case replyClose(UInt16?)
        case closeDone(UInt16?)
        case fail(UInt16)
    }

    func run(_ frames: [[UInt8]], max: Int = 1000, closeSent: Bool = false, pieces: Int? = nil) -> [Out] {
        var parser = WSFrameParser(expectMasked: true)
        var m = WSConnectionStateMachine(maxMessageBytes: max)
        if closeSent { m.markCloseSent() }
        var out: [Out] = []
        var bytes = frames.flatMap { $0 }
        let step = pieces ?? Swift.max(1, bytes.count)
        var i = 0
        while i < bytes.count {
            let end = min(bytes.count, i + step)
            let err = bytes.withUnsafeMutableBytes { p in
                parser.feed(UnsafeMutableRawBufferPointer(rebasing: p[i..<end])) { e in
                    guard let a = m.handle(e) else { return true }
                    switch a {
                    case .message(let op, let d): out.append(.message(op, Array(d)))
                    case .assembledMessage(let op, let d): out.append(.message(op, d))
                    case .sendPong(let d): out.append(.pong(d))
                    case .pongReceived: out.append(.pongReceived)
                    case .replyCloseAndShutdown(let c): out.append(.replyClose(c))
                    case .closeHandshakeComplete(let c): out.append(.closeDone(c))
                    case .fail(let e): out.append(.fail(e.code)); return false
                    }
                    return true
                }
            }
            if let err { out.append(.fail(err.code)); break }
            if case .fail? = out.last { break }
            i = end
        }
        return out
    }

    func f(_ op: WSOpcode, _ payload: [UInt8], fin: Bool = true) -> [UInt8] {
        WSFrameEncoder.frame(opcode: op, fin: fin, payload: payload, maskKey: 0x01020304)
    }
    func t(_ s: String, fin: Bool = true, op: WSOpcode = .text) -> [UInt8] { f(op, Array(s.utf8), fin: fin) }

    func testFragmentedMessageWithInterleavedPing() {
        for pieces in [nil, 1, 3] {
            let out = run([t("Hel", fin: false), f(.ping, [7]), t("lo", fin: false, op: .continuation), t(" there", op: .continuation)], pieces: pieces)
            XCTAssertEqual(out, [.pong([7]), .message(.text, Array("Hello there".utf8))])
        }
    }

    func testSequencingErrors() {
        XCTAssertEqual(run([t("x", op: .continuation)]), [.fail(1002)])
        XCTAssertEqual(run([t("a", fin: false), t("b")]), [.fail(1002)], "new text inside a fragmented message")
        XCTAssertEqual(run([t("a", fin: false), f(.binary, [1])]), [.fail(1002)])
    }

    func testInvalidUTF8FailsBeforeMessageEnds() {
        // The bad byte is in the first fragment: failure comes before the final fragment is seen.
        let out = run([f(.text, [0xCE, 0xBA, 0xFF], fin: false)])
        XCTAssertEqual(out, [.fail(1007)])
        // Split sequence across fragments is fine; a truncated one at the end is not.
        XCTAssertEqual(run([f(.text, [0xCE], fin: false), f(.continuation, [0xBA])]), [.message(.text, [0xCE, 0xBA])])
        XCTAssertEqual(run([f(.text, [0xCE, 0xBA, 0xE1])]), [.fail(1007)])
        XCTAssertEqual(run([f(.binary, [0xFF])]), [.message(.binary, [0xFF])], "binary is not validated")
    }

    func testMessageTooBigRefusedByDeclaredLength() {
        // Only the header is sent: the refusal must not wait for (or buffer) the payload.
        var header: [UInt8] = [0x82, 0xFE, 0x04, 0x00, 1, 2, 3, 4]  // 1024 bytes declared
        XCTAssertEqual(run([header], max: 1000), [.fail(1009)])
        header = t("x", fin: false) + t(String(repeating: "y", count: 1000), op: .continuation)
        XCTAssertEqual(run([header], max: 1000), [.fail(1009)], "fragments add up past the limit")
    }

    func testCloseHandling() {
        XCTAssertEqual(run([f(.close, [])]), [.replyClose(nil)])
        XCTAssertEqual(run([f(.close, [0x03, 0xE8])]), [.replyClose(1000)])
        XCTAssertEqual(run([f(.close, [0x03, 0xE8] + Array("bye".utf8))]), [.replyClose(1000)])
        XCTAssertEqual(run([f(.close, [0x03])]), [.fail(1002)])
        XCTAssertEqual(run([f(.close, [0x03, 0xE8, 0xFF])]), [.fail(1007)])
        for bad: UInt16 in [0, 999, 1004, 1005, 1006, 1015, 1016, 1100, 2000, 2999, 5000] {
            XCTAssertEqual(run([f(.close, [UInt8(bad >> 8), UInt8(bad & 0xFF)])]), [.fail(1002)], "code \(bad)")
        }
        for good: UInt16 in [1000, 1001, 1002, 1003, 1007, 1008, 1009, 1010, 1011, 3000, 3999, 4000, 4999] {
            XCTAssertEqual(run([f(.close, [UInt8(good >> 8), UInt8(good & 0xFF)])]), [.replyClose(good)], "code \(good)")
        }
        XCTAssertEqual(run([f(.close, [0x03, 0xE8])], closeSent: true), [.closeDone(1000)])
        XCTAssertEqual(run([t("late"), f(.close, [0x03, 0xE8])], closeSent: true), [.closeDone(1000)], "data after our close is dropped")
        XCTAssertEqual(run([f(.close, []), t("after")]), [.replyClose(nil)], "nothing after the peer's close")
    }
}
