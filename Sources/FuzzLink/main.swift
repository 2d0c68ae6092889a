// libFuzzer target for the stream links' framing (worker ↔ gateway): the bytes a peer sends are cut
// into frames by `LinkFrameReader` and each frame is decoded by `LinkFrame.decode`. The first input
// byte picks where the rest is split into two reads (so frames gathered across reads are covered).
// Invariants: no crash or hang; any refusal is a thrown DecodeError; every frame that decodes
// re-encodes to the bytes it came from and reads back equal (in one read and byte by byte); the
// frames a stream yields do not depend on how it is split into reads.
import Domain
import FleetCore
import FuzzSupport
import JSON

typealias Frame = (kind: UInt8, payload: [UInt8])

/// Reads `chunks` with one fresh reader. `limit(call, framesSoFar)` answers each question for the
/// largest frame. Returns the frames handed out (copied) and whether the reader threw.
func readAll(_ chunks: [ArraySlice<UInt8>], limit: (Int, Int) -> Int) -> (frames: [Frame], threw: Bool) {
    var reader = LinkFrameReader()
    var frames: [Frame] = []
    var calls = 0
    for chunk in chunks {
        do {
            try chunk.withUnsafeBytes { p in
                try reader.read(p, maxFrameBytes: {
                    calls += 1
                    return limit(calls, frames.count)
                }) { kind, payload in
                    precondition(payload.count + 1 <= limit(calls, frames.count), "frame over the limit handed out")
                    frames.append((kind, Array(payload)))
                    return true
                }
            }
        } catch {
            return (frames, true)
        }
    }
    return (frames, false)
}

func same(_ a: [Frame], _ b: [Frame]) -> Bool {
    a.count == b.count && zip(a, b).allSatisfy { $0.kind == $1.kind && $0.payload == $1.payload }
}

func decode(_ kind: UInt8, _ payload: [UInt8]) -> LinkFrame? {
    payload.withUnsafeBytes { p in try? LinkFrame.decode(kind: kind, payload: p) }
}

/// A frame that decoded: its encoding is the bytes it came from, and they read back equal.
func roundTrip(_ frame: LinkFrame, kind: UInt8, payload: [UInt8]) {
    let encoded = frame.bytes
    precondition(encoded.count >= 5, "encoding shorter than a header")
    let length = Int(encoded[0]) << 24 | Int(encoded[1]) << 16 | Int(encoded[2]) << 8 | Int(encoded[3])
    precondition(length == encoded.count - 4, "length prefix \(length) for \(encoded.count - 4) bytes")
    precondition(encoded[4] == kind && Array(encoded[5...]) == payload, "\(frame) re-encodes to other bytes")
    guard let again = decode(encoded[4], Array(encoded[5...])) else { preconditionFailure("\(frame) re-encoded does not decode") }
    precondition(again == frame, "\(frame) decodes back as \(again)")
    // Fresh readers, whole and byte by byte.
    let whole = readAll([encoded[...]], limit: { _, _ in LinkFrame.maxFrameBytes })
    precondition(!whole.threw && whole.frames.count == 1, "re-encoded \(frame) reads as \(whole.frames.count) frames")
    precondition(decode(whole.frames[0].kind, whole.frames[0].payload) == frame, "re-read \(frame) differs")
    if case .message(let id, let json) = frame, let m = try? RelayMessage.decode(json) {
        // A relay message that reads appends as the frame of its own encoding.
        var out: [UInt8] = [], w = JSONWriter()
        LinkFrame.appendMessage(id: id, m, to: &out, scratch: &w)
        precondition(out == LinkFrame.message(id: id, json: m.bytes).bytes, "appendMessage differs from the message frame")
    }
    let bytewise = readAll(encoded.indices.map { encoded[$0...$0] }, limit: { _, _ in LinkFrame.maxFrameBytes })
    precondition(!bytewise.threw && bytewise.frames.count == 1, "byte by byte, \(frame) reads as \(bytewise.frames.count) frames")
    precondition(decode(bytewise.frames[0].kind, bytewise.frames[0].payload) == frame, "byte by byte, re-read \(frame) differs")
}

func fuzzOne(_ data: [UInt8]) {
    guard let control = data.first else { return }
    let stream = data[1...]
    let split = stream.startIndex + stream.count * Int(control) / 255
    let halves = [stream[..<split], stream[split...]]

    // The limit alternates between the handshake's and the full one at every question.
    let alternating = readAll(halves) { call, _ in call % 2 == 1 ? LinkFrame.maxHandshakeFrameBytes : LinkFrame.maxFrameBytes }
    for f in alternating.frames {
        precondition(f.payload.count + 1 <= LinkFrame.maxFrameBytes)
        if let frame = decode(f.kind, f.payload) { roundTrip(frame, kind: f.kind, payload: f.payload) }
    }

    // As a link uses it (small until the first frame, the handshake's, then full): the frames and
    // the refusal do not depend on where the reads end.
    let perFrame: (Int, Int) -> Int = { _, n in n == 0 ? LinkFrame.maxHandshakeFrameBytes : LinkFrame.maxFrameBytes }
    let whole = readAll([stream], limit: perFrame)
    let parts = readAll(halves, limit: perFrame)
    precondition(same(whole.frames, parts.frames) && whole.threw == parts.threw, "split at \(split - stream.startIndex) reads otherwise")
    if stream.count <= 512 {
        let bytewise = readAll(stream.indices.map { stream[$0...$0] }, limit: perFrame)
        precondition(same(whole.frames, bytewise.frames) && whole.threw == bytewise.threw, "byte by byte reads otherwise")
    }
}

fuzzMain(fuzzOne)
