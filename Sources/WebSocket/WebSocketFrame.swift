/// RFC 6455 §5.2 opcodes.
public enum WSOpcode: UInt8, Sendable {
    case continuation = 0x0, text = 0x1, binary = 0x2
    case close = 0x8, ping = 0x9, pong = 0xA

    public var isControl: Bool { rawValue & 0x8 != 0 }
}

/// Close status codes (RFC 6455 §7.4).
public enum WSCloseCode {
    public static let normal: UInt16 = 1000
    public static let goingAway: UInt16 = 1001
    public static let protocolError: UInt16 = 1002
    public static let unsupportedData: UInt16 = 1003
    public static let invalidPayload: UInt16 = 1007
    public static let policyViolation: UInt16 = 1008
    public static let messageTooBig: UInt16 = 1009
    public static let internalError: UInt16 = 1011

    /// Codes a peer may put on the wire (§7.4.1, §7.4.2 and the IANA registry; 1004–1006 and 1015
    /// are reserved for local use and never sent).
    public static func isValidOnWire(_ code: UInt16) -> Bool {
        switch code {
        case 1000...1003, 1007...1014, 3000...4999: return true
        default: return false
        }
    }
}

public struct WSFrameHeader: Equatable, Sendable {
    public var fin: Bool
    public var opcode: WSOpcode
    public var masked: Bool
    public var maskKey: UInt32
    public var length: UInt64
}

/// A protocol violation found while parsing, with the close code to send.
public struct WSProtocolError: Error, Equatable, Sendable {
    public let code: UInt16
    public let reason: String
    public init(_ code: UInt16, _ reason: String) { self.code = code; self.reason = reason }
}

/// What the parser reports while it walks the bytes.
public enum WSParseEvent {
    case header(WSFrameHeader)
    /// A piece of the current frame's payload, already unmasked (in place, in the caller's buffer).
    case payload(UnsafeMutableRawBufferPointer)
    case frameEnd
}

/// A streaming RFC 6455 frame parser: a pure state machine over byte pieces of any size.
/// Payload is passed through as it arrives instead of being buffered, so the connection above
/// decides what to keep and can refuse oversize or invalid data at once.
public struct WSFrameParser: Sendable {
    /// Server side: client frames must be masked (§5.1). Client side: server frames must not be.
    public let expectMasked: Bool
    private var headerBytes: (UInt64, UInt64) = (0, 0)  // up to 14 bytes of a split header
    private var headerCount = 0
    private var inPayload = false
    private var remaining: UInt64 = 0
    private var maskKey: UInt32 = 0
    private var maskOffset = 0
    private var masked = false
    private var failed: WSProtocolError?
    /// Part of a frame (header or payload) has arrived and the rest has not.
    public var isMidFrame: Bool { headerCount > 0 || inPayload }

    public init(expectMasked: Bool) { self.expectMasked = expectMasked }

    /// Parses `bytes` (modifying them: payload is unmasked in place). `sink` sees each event and
    /// returns false to stop early (the rest of the bytes are then ignored: the connection is ending).
    @discardableResult
    public mutating func feed(_ bytes: UnsafeMutableRawBufferPointer, _ sink: (WSParseEvent) -> Bool) -> WSProtocolError? {
        if let failed { return failed }
        var i = 0
        let n = bytes.count
        while i < n || (inPayload && remaining == 0) {
            if inPayload {
                if remaining > 0 {
                    let take = Int(min(UInt64(n - i), remaining))
                    let piece = UnsafeMutableRawBufferPointer(rebasing: bytes[i..<(i + take)])
                    if masked { unmask(piece) }
                    remaining -= UInt64(take)
                    i += take
                    if !sink(.payload(piece)) { return nil }
                }
                if remaining == 0 {
                    inPayload = false
                    if !sink(.frameEnd) { return nil }
                }
                continue
            }
            // Collect header bytes.
            withUnsafeMutableBytes(of: &headerBytes) { h in
                h[headerCount] = bytes[i]
            }
            headerCount += 1
            i += 1
            switch decodeHeader() {
            case .needMore: continue
            case .failure(let e):
                failed = e
                return e
            case .header(let h):
                headerCount = 0
                inPayload = true
                remaining = h.length
                masked = h.masked
                maskKey = h.maskKey
                maskOffset = 0
                if !sink(.header(h)) { return nil }
            }
        }
        return nil
    }

    private enum HeaderResult { case needMore, failure(WSProtocolError), header(WSFrameHeader) }

    private func decodeHeader() -> HeaderResult {
        withUnsafeBytes(of: headerBytes) { h -> HeaderResult in
            guard headerCount >= 2 else { return .needMore }
            let b0 = h[0], b1 = h[1]
            if b0 & 0x70 != 0 { return .failure(WSProtocolError(WSCloseCode.protocolError, "reserved bits set")) }
            guard let op = WSOpcode(rawValue: b0 & 0x0F) else {
                return .failure(WSProtocolError(WSCloseCode.protocolError, "unknown opcode"))
            }
            let fin = b0 & 0x80 != 0
            let isMasked = b1 & 0x80 != 0
            if isMasked != expectMasked {
                return .failure(WSProtocolError(WSCloseCode.protocolError, expectMasked ? "unmasked client frame" : "masked server frame"))
            }
            let len7 = UInt64(b1 & 0x7F)
            let lenBytes = len7 == 126 ? 2 : (len7 == 127 ? 8 : 0)
            let need = 2 + lenBytes + (isMasked ? 4 : 0)
            if op.isControl {
                if !fin { return .failure(WSProtocolError(WSCloseCode.protocolError, "fragmented control frame")) }
                if len7 > 125 { return .failure(WSProtocolError(WSCloseCode.protocolError, "control frame over 125 bytes")) }
            }
            guard headerCount >= need else { return .needMore }
            var length = len7
            if lenBytes == 2 {
                length = UInt64(h[2]) << 8 | UInt64(h[3])
            } else if lenBytes == 8 {
                length = 0
                for k in 0..<8 { length = length << 8 | UInt64(h[2 + k]) }
                if length >> 63 != 0 { return .failure(WSProtocolError(WSCloseCode.protocolError, "payload length MSB set")) }
            }
            var key: UInt32 = 0
            if isMasked {
                let o = 2 + lenBytes
                key = UInt32(h[o]) | UInt32(h[o + 1]) << 8 | UInt32(h[o + 2]) << 16 | UInt32(h[o + 3]) << 24
            }
            return .header(WSFrameHeader(fin: fin, opcode: op, masked: isMasked, maskKey: key, length: length))
        }
    }

    /// XORs the mask over a piece, continuing where the previous piece of this frame stopped.
    private mutating func unmask(_ p: UnsafeMutableRawBufferPointer) {
        WSMask.apply(key: maskKey, offset: maskOffset, to: p)
        maskOffset = (maskOffset + p.count) & 3
    }
}

public enum WSMask {
    /// key bytes are in wire order in the low-to-high bytes of `key`.
    @inline(__always)
    public static func apply(key: UInt32, offset: Int, to p: UnsafeMutableRawBufferPointer) {
        guard p.count > 0 else { return }
        let rotated = offset == 0 ? key : (key >> (8 * UInt32(offset)) | key << (32 - 8 * UInt32(offset)))
        var i = 0
        let n = p.count
        let k64 = UInt64(rotated) | UInt64(rotated) << 32
        while i + 8 <= n {
            let v = p.loadUnaligned(fromByteOffset: i, as: UInt64.self)
            p.storeBytes(of: v ^ k64, toByteOffset: i, as: UInt64.self)
            i += 8
        }
        var k = rotated
        while i < n {
            p[i] ^= UInt8(truncatingIfNeeded: k)
            k = k >> 8 | k << 24
            i += 1
        }
    }
}

/// Frame encoding (§5.2). Server frames are unmasked; client frames carry `maskKey`.
public enum WSFrameEncoder {
    /// Appends one complete frame to `out`.
    public static func append(opcode: WSOpcode, fin: Bool = true, payload: UnsafeRawBufferPointer,
                              maskKey: UInt32? = nil, to out: inout [UInt8]) {
        out.append((fin ? 0x80 : 0) | opcode.rawValue)
        let m: UInt8 = maskKey == nil ? 0 : 0x80
        let n = payload.count
        if n < 126 {
            out.append(m | UInt8(n))
        } else if n <= 0xFFFF {
            out.append(m | 126)
            out.append(UInt8(n >> 8)); out.append(UInt8(n & 0xFF))
        } else {
            out.append(m | 127)
            for s in stride(from: 56, through: 0, by: -8) { out.append(UInt8(truncatingIfNeeded: UInt64(n) >> UInt64(s))) }
        }
        if let key = maskKey {
            out.append(UInt8(truncatingIfNeeded: key)); out.append(UInt8(truncatingIfNeeded: key >> 8))
            out.append(UInt8(truncatingIfNeeded: key >> 16)); out.append(UInt8(truncatingIfNeeded: key >> 24))
            let start = out.count
            out.append(contentsOf: payload)
            out.withUnsafeMutableBytes { WSMask.apply(key: key, offset: 0, to: UnsafeMutableRawBufferPointer(rebasing: $0[start...])) }
        } else {
            out.append(contentsOf: payload)
        }
    }

    public static func frame(opcode: WSOpcode, fin: Bool = true, payload: [UInt8], maskKey: UInt32? = nil) -> [UInt8] {
        var out: [UInt8] = []
        payload.withUnsafeBytes { append(opcode: opcode, fin: fin, payload: $0, maskKey: maskKey, to: &out) }
        return out
    }

    public static func closePayload(code: UInt16, reason: String) -> [UInt8] {
        var p: [UInt8] = [UInt8(code >> 8), UInt8(code & 0xFF)]
        // Control payload ≤ 125 bytes: 2 for the code, ≤ 123 for the reason, cut on a character boundary.
        var r = Array(reason.utf8)
        if r.count > 123 {
            r = Array(r[0..<123])
            while let last = r.last, last & 0xC0 == 0x80 { r.removeLast() }
            if let last = r.last, last >= 0xC0 { r.removeLast() }
        }
        p.append(contentsOf: r)
        return p
    }
}
