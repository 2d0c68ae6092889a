import CCrypto
import HTTP1


public struct HandshakeError: Error, Equatable, Sendable {
    public let status: Int
    public let message: String
}

/// The opening handshake (RFC 6455 §4.2).
public enum WebSocketHandshake {
    public static let guid = "258EAFA5-E914-47DA-95CA-C5AB0DC85B11"

    /// Checks an upgrade request and returns the Sec-WebSocket-Accept value.
    public static func validate(_ head: HTTPRequestHead, origins: OriginPolicy) -> Result<String, HandshakeError> {
        guard head.method == "GET" else { return .failure(HandshakeError(status: 405, message: "WebSocket upgrade needs GET")) }
        guard head.versionMinor >= 1 else { return .failure(HandshakeError(status: 400, message: "WebSocket upgrade needs HTTP/1.1")) }
        guard head.headers.tokens("upgrade").contains("websocket"),
              head.headers.tokens("connection").contains("upgrade") else {
            return .failure(HandshakeError(status: 426, message: "this endpoint speaks WebSocket only"))
        }
        guard head.headers.first("sec-websocket-version") == "13" else {
            return .failure(HandshakeError(status: 426, message: "Sec-WebSocket-Version must be 13"))
        }
        let keys = head.headers.all("sec-websocket-key")
        guard keys.count == 1, let decoded = Base64.decode(keys[0]), decoded.count == 16 else {
            return .failure(HandshakeError(status: 400, message: "Sec-WebSocket-Key must be 16 bytes in base64"))
        }
        guard origins.permits(origin: head.headers.first("origin"), host: head.headers.first("host")) else {
            return .failure(HandshakeError(status: 403, message: "origin not allowed"))
        }
        return .success(acceptValue(for: keys[0]))
    }

    public static func acceptValue(for key: String) -> String {
        let input = Array((key + guid).utf8)
        var digest = [UInt8](repeating: 0, count: 20)
        input.withUnsafeBufferPointer { p in
            digest.withUnsafeMutableBufferPointer { d in _ = SHA1(p.baseAddress, p.count, d.baseAddress) }
        }
        return Base64.encode(digest)
    }

    public static func responseHead(accept: String, extraHeaders: HTTPHeaders = HTTPHeaders()) -> [UInt8] {
        var s = "HTTP/1.1 101 Switching Protocols\r\nUpgrade: websocket\r\nConnection: Upgrade\r\nSec-WebSocket-Accept: \(accept)\r\n"
        for (n, v) in extraHeaders.fields { s += "\(n): \(v)\r\n" }
        s += "\r\n"
        return Array(s.utf8)
    }
}

/// RFC 4648 base64 (standard alphabet, padded).
public enum Base64 {
    private static let alphabet = Array("ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789+/".utf8)

    public static func encode(_ bytes: [UInt8]) -> String {
        var out: [UInt8] = []
        out.reserveCapacity((bytes.count + 2) / 3 * 4)
        var i = 0
        while i + 3 <= bytes.count {
            let v = UInt32(bytes[i]) << 16 | UInt32(bytes[i + 1]) << 8 | UInt32(bytes[i + 2])
            out += [alphabet[Int(v >> 18 & 63)], alphabet[Int(v >> 12 & 63)], alphabet[Int(v >> 6 & 63)], alphabet[Int(v & 63)]]
            i += 3
        }
        let rest = bytes.count - i
        if rest == 1 {
            let v = UInt32(bytes[i]) << 16
            out += [alphabet[Int(v >> 18 & 63)], alphabet[Int(v >> 12 & 63)], 61, 61]
        } else if rest == 2 {
            let v = UInt32(bytes[i]) << 16 | UInt32(bytes[i + 1]) << 8
            out += [alphabet[Int(v >> 18 & 63)], alphabet[Int(v >> 12 & 63)], alphabet[Int(v >> 6 & 63)], 61]
        }
        return String(decoding: out, as: UTF8.self)
    }

    public static func decode(_ s: String) -> [UInt8]? {
        let u = Array(s.utf8)
        guard u.count % 4 == 0 else { return nil }
        var out: [UInt8] = []
        var i = 0
        while i < u.count {
            var v: UInt32 = 0
            var pad = 0
            for k in 0..<4 {
                let c = u[i + k]
                let d: UInt32
                switch c {
                case 65...90: d = UInt32(c - 65)
                case 97...122: d = UInt32(c - 71)
                case 48...57: d = UInt32(c + 4)
                case 43: d = 62
                case 47: d = 63
                case 61:
                    guard i + 4 == u.count, k >= 2 else { return nil }
                    pad += 1
                    d = 0
                default: return nil
                }
                if pad > 0 && c != 61 { return nil }
                v = v << 6 | d
            }
            out.append(UInt8(v >> 16 & 0xFF))
            if pad < 2 { out.append(UInt8(v >> 8 & 0xFF)) }
            if pad < 1 { out.append(UInt8(v & 0xFF)) }
            i += 4
        }
        return out
    }
}
