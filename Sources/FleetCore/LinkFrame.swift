import Domain
import JSON

/// The framing of a stream link (worker ↔ gateway, `docs/ARCHITECTURE.md`): length-prefixed
/// binary frames, `[u32 length of the rest][u8 type][payload]`, big-endian. Tokens travel as
/// `delta` frames (stream id, index, the text's UTF-8 bytes: no JSON); the few other events of a
/// stream (accepted, done, error, abort) as `message` frames holding the relay message's JSON.
/// Pure: encoding appends to a caller's buffer, decoding reads from bytes and refuses anything
/// malformed with a reason.
public enum LinkFrame: Equatable, Sendable {
    /// Gateway → worker, first: the nonce the worker's hello must sign.
    case challenge(nonce: [UInt8])
    /// Worker → gateway: who it is, which gateway it means to reach, its own nonce, and
    /// HMAC(secret, "hello" ‖ gateway nonce ‖ worker ‖ gateway ‖ worker nonce).
    case hello(worker: String, gateway: String, nonce: [UInt8], mac: [UInt8])
    /// Gateway → worker: HMAC(secret, "welcome" ‖ worker nonce ‖ gateway): the gateway knows the
    /// secret too.
    case welcome(mac: [UInt8])
    /// Either way, when a side has sent nothing for a while: a silent link is a dead one.
    case ping
    /// Worker → gateway: one token of stream `id` (ids are the worker's, per link).
    case delta(id: UInt32, index: UInt32, text: [UInt8])
    /// Worker → gateway: any other event of stream `id` (the first one names its stream key).
    case message(id: UInt32, json: [UInt8])
    /// Gateway → worker: stop stream `id`.
    case cancel(id: UInt32)

    public enum Kind: UInt8, Sendable {
        case challenge = 1, hello = 2, welcome = 3, ping = 4
        case delta = 10, message = 11
        case cancel = 20
    }

    /// The largest frame either side accepts (a message frame holds at most one error or done).
    public static let maxFrameBytes = 1 << 20
    /// Before the hello is checked, frames are small.
    public static let maxHandshakeFrameBytes = 1024
    public static let nonceBytes = 16
    public static let macBytes = 32

    public struct DecodeError: Error, Equatable, Sendable {
        public let reason: String
        init(_ r: String) { reason = r }
    }

    // MARK: encoding (appends; the hot frames write straight into the buffer)

    @inline(__always)
    static func putU32(_ v: UInt32, _ out: inout [UInt8]) {
        out.append(UInt8(truncatingIfNeeded: v >> 24))
        out.append(UInt8(truncatingIfNeeded: v >> 16))
        out.append(UInt8(truncatingIfNeeded: v >> 8))
        out.append(UInt8(truncatingIfNeeded: v))
    }

    /// A token of stream `id`, without making a frame value or copying the text twice.
    public static func appendDelta(id: UInt32, index: Int, text: String, to out: inout [UInt8]) {
        let n = text.utf8.count
        putU32(UInt32(1 + 8 + n), &out)
        out.append(Kind.delta.rawValue)
        putU32(id, &out)
        putU32(UInt32(truncatingIfNeeded: index), &out)
        out.append(contentsOf: text.utf8)
    }

    /// Stream `id`'s other events, as relay-message JSON.
    public static func appendMessage(id: UInt32, _ message: RelayMessage, to out: inout [UInt8], scratch w: inout JSONWriter) {
        w.reset()
        message.encode(into: &w)
        let json = w.bytes
        putU32(UInt32(1 + 4 + json.count), &out)
        out.append(Kind.message.rawValue)
        putU32(id, &out)
        out.append(contentsOf: json)
    }

    public func append(to out: inout [UInt8]) {
        func head(_ kind: Kind, _ payload: Int) {
            LinkFrame.putU32(UInt32(1 + payload), &out)
            out.append(kind.rawValue)
        }
        switch self {
        case .challenge(let nonce):
            head(.challenge, nonce.count)
            out.append(contentsOf: nonce)
        case .hello(let worker, let gateway, let nonce, let mac):
            let w = Array(worker.utf8.prefix(255)), g = Array(gateway.utf8.prefix(255))
            head(.hello, 2 + w.count + g.count + nonce.count + mac.count)
            out.append(UInt8(w.count)); out.append(contentsOf: w)
            out.append(UInt8(g.count)); out.append(contentsOf: g)
            out.append(contentsOf: nonce)
            out.append(contentsOf: mac)
        case .welcome(let mac):
            head(.welcome, mac.count)
            out.append(contentsOf: mac)
        case .ping:
            head(.ping, 0)
        case .delta(let id, let index, let text):
            head(.delta, 8 + text.count)
            LinkFrame.putU32(id, &out)
            LinkFrame.putU32(index, &out)
            out.append(contentsOf: text)
        case .message(let id, let json):
            head(.message, 4 + json.count)
            LinkFrame.putU32(id, &out)
            out.append(contentsOf: json)
        case .cancel(let id):
            head(.cancel, 4)
            LinkFrame.putU32(id, &out)
        }
    }

    public var bytes: [UInt8] {
        var out: [UInt8] = []
        append(to: &out)
        return out
    }

    // MARK: decoding

    @inline(__always)
    public static func u32(_ p: UnsafeRawBufferPointer, _ at: Int) -> UInt32 {
        UInt32(p[at]) << 24 | UInt32(p[at + 1]) << 16 | UInt32(p[at + 2]) << 8 | UInt32(p[at + 3])
    }

    /// One frame's type and payload (without the length prefix).
    public static func decode(kind raw: UInt8, payload p: UnsafeRawBufferPointer) throws(DecodeError) -> LinkFrame {
        guard let kind = Kind(rawValue: raw) else { throw DecodeError("unknown frame type \(raw)") }
        switch kind {
        case .challenge:
            guard p.count == nonceBytes else { throw DecodeError("challenge: nonce of \(p.count) bytes") }
            return .challenge(nonce: Array(p))
        case .hello:
            guard p.count >= 1 else { throw DecodeError("hello: empty") }
            let wn = Int(p[0])
            guard p.count >= 1 + wn + 1 else { throw DecodeError("hello: truncated worker") }
            let gn = Int(p[1 + wn])
            guard p.count == 2 + wn + gn + nonceBytes + macBytes else { throw DecodeError("hello: wrong length") }
            // Names must be valid UTF-8: a lossy decode (U+FFFD) would not re-encode to the bytes the
            // worker signed, and could grow past the 255 bytes a name may take.
            guard let worker = String(validating: UnsafeRawBufferPointer(rebasing: p[1..<(1 + wn)]), as: UTF8.self) else {
                throw DecodeError("hello: worker not UTF-8")
            }
            guard let gateway = String(validating: UnsafeRawBufferPointer(rebasing: p[(2 + wn)..<(2 + wn + gn)]), as: UTF8.self) else {
                throw DecodeError("hello: gateway not UTF-8")
            }
            let n = 2 + wn + gn
            return .hello(worker: worker, gateway: gateway, nonce: Array(p[n..<(n + nonceBytes)]),
                          mac: Array(p[(n + nonceBytes)...]))
        case .welcome:
            guard p.count == macBytes else { throw DecodeError("welcome: mac of \(p.count) bytes") }
            return .welcome(mac: Array(p))
        case .ping:
            guard p.isEmpty else { throw DecodeError("ping: payload") }
            return .ping
        case .delta:
            guard p.count >= 8 else { throw DecodeError("delta: truncated") }
            return .delta(id: u32(p, 0), index: u32(p, 4), text: Array(p[8...]))
        case .message:
            guard p.count >= 4 else { throw DecodeError("message: truncated") }
            return .message(id: u32(p, 0), json: Array(p[4...]))
        case .cancel:
            guard p.count == 4 else { throw DecodeError("cancel: wrong length") }
            return .cancel(id: u32(p, 0))
        }
    }
}

/// Cuts a byte stream into link frames. Complete frames in a read are handed out straight from it
/// (no copy); only a frame split across reads is gathered. Confined to its connection's loop.
public struct LinkFrameReader: Sendable {
    private var partial: [UInt8] = []

    public init() {}

    /// Calls `body` with each complete frame's type and payload, in order; throws on a malformed
    /// length (the link must close). `body` returns false to stop reading (the link closed).
    /// `maxFrameBytes` is asked before each frame (small until the handshake is done; `body`
    /// may change its answer).
    public mutating func read(_ bytes: UnsafeRawBufferPointer, maxFrameBytes: () -> Int,
                              _ body: (UInt8, UnsafeRawBufferPointer) throws(LinkFrame.DecodeError) -> Bool) throws(LinkFrame.DecodeError) {
        var input = bytes
        if !partial.isEmpty {
            // Finish the frame begun in an earlier read first.
            let need: Int
            if partial.count < 4 {
                let take = min(4 - partial.count, input.count)
                partial.append(contentsOf: input[0..<take])
                input = UnsafeRawBufferPointer(rebasing: input[take...])
                if partial.count < 4 { return }
            }
            let length = Int(partial.withUnsafeBytes { LinkFrame.u32($0, 0) })
            guard length >= 1, length <= maxFrameBytes() else { throw LinkFrame.DecodeError("frame of \(length) bytes") }
            need = 4 + length - partial.count
            let take = min(need, input.count)
            partial.append(contentsOf: input[0..<take])
            input = UnsafeRawBufferPointer(rebasing: input[take...])
            if take < need { return }
            let frame = partial
            partial.removeAll(keepingCapacity: true)
            var failure: LinkFrame.DecodeError?
            let go = frame.withUnsafeBytes { p -> Bool in
                do throws(LinkFrame.DecodeError) { return try body(p[4], UnsafeRawBufferPointer(rebasing: p[5...])) } catch {
                    failure = error
                    return false
                }
            }
            if let failure { throw failure }
            if !go { return }
        }
        var at = 0
        while input.count - at >= 4 {
            let length = Int(LinkFrame.u32(input, at))
            guard length >= 1, length <= maxFrameBytes() else { throw LinkFrame.DecodeError("frame of \(length) bytes") }
            guard input.count - at - 4 >= length else { break }
            let kind = input[at + 4]
            let payload = UnsafeRawBufferPointer(rebasing: input[(at + 5)..<(at + 4 + length)])
            at += 4 + length
            if try !body(kind, payload) { return }
        }
        if at < input.count { partial.append(contentsOf: input[at...]) }
    }
}
