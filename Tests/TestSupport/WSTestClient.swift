import NetCore
import WebSocket

/// A hand-driven WebSocket client over a blocking socket: writes exactly the frames a test asks
/// for (masked or not, any flags) and reads the server's frames one by one.
public final class WSTestClient {
    public let socket: BlockingClient
    private var pending: [UInt8] = []
    public private(set) var handshakeStatus = 0
    public private(set) var handshakeResponse = ""

    public init(port: Int, path: String = "/_conformance/echo", headers: [String: String] = [:], timeoutMs: Int = 3000,
                key: String = "dGhlIHNhbXBsZSBub25jZQ==", version: String = "13") throws {
        socket = try BlockingClient(port: port, timeoutMs: timeoutMs)
        var req = "GET \(path) HTTP/1.1\r\nHost: 127.0.0.1:\(port)\r\nUpgrade: websocket\r\nConnection: Upgrade\r\n"
        req += "Sec-WebSocket-Key: \(key)\r\nSec-WebSocket-Version: \(version)\r\n"
        for (k, v) in headers { req += "\(k): \(v)\r\n" }
        req += "\r\n"
        try socket.send(req)
        while true {
            if let end = find(pending, [13, 10, 13, 10]) {
                handshakeResponse = String(decoding: pending[0..<end], as: UTF8.self)
                handshakeStatus = Int(handshakeResponse.split(separator: " ")[1]) ?? 0
                pending.removeFirst(end + 4)
                break
            }
            let more = socket.read(atLeast: 1)
            if more.isEmpty { throw TestError("no handshake response") }
            pending += more
        }
    }

    public func sendFrame(_ opcode: UInt8, _ payload: [UInt8], fin: Bool = true, rsv: UInt8 = 0, masked: Bool = true,
                          declaredLength: Int? = nil) throws {
        try socket.send(WSTestClient.encode(opcode, payload, fin: fin, rsv: rsv, masked: masked, declaredLength: declaredLength))
    }

    public func sendRaw(_ bytes: [UInt8]) throws { try socket.send(bytes) }

    /// A client frame's bytes (masked unless told otherwise).
    public static func encode(_ opcode: UInt8, _ payload: [UInt8], fin: Bool = true, rsv: UInt8 = 0, masked: Bool = true,
                              declaredLength: Int? = nil) -> [UInt8] {
        var f: [UInt8] = [(fin ? 0x80 : 0) | (rsv << 4) | opcode]
        let n = declaredLength ?? payload.count
        let m: UInt8 = masked ? 0x80 : 0
        if n < 126 { f.append(m | UInt8(n)) } else if n <= 0xFFFF { f += [m | 126, UInt8(n >> 8), UInt8(n & 0xFF)] } else {
            f.append(m | 127)
            for s in stride(from: 56, through: 0, by: -8) { f.append(UInt8(truncatingIfNeeded: UInt64(n) >> UInt64(s))) }
        }
        if masked {
            let key: [UInt8] = [0x37, 0xfa, 0x21, 0x3d]
            f += key
            f += payload.enumerated().map { $0.element ^ key[$0.offset & 3] }
        } else {
            f += payload
        }
        return f
    }

    public func sendText(_ s: String) throws { try sendFrame(1, Array(s.utf8)) }

    public func sendClose(_ code: UInt16, reason: String = "") throws {
        try sendFrame(8, [UInt8(code >> 8), UInt8(code & 0xFF)] + Array(reason.utf8))
    }

    /// The next frame from the server, or nil when the connection ended first.
    public func readFrame() -> (opcode: UInt8, fin: Bool, payload: [UInt8])? {
        while true {
            if pending.count >= 2 {
                let op = pending[0] & 0x0F
                let fin = pending[0] & 0x80 != 0
                var len = Int(pending[1] & 0x7F)
                var off = 2
                if len == 126 {
                    guard pending.count >= 4 else { return more() ? readFrame() : nil }
                    len = Int(pending[2]) << 8 | Int(pending[3]); off = 4
                } else if len == 127 {
                    guard pending.count >= 10 else { return more() ? readFrame() : nil }
                    len = 0
                    for k in 0..<8 { len = len << 8 | Int(pending[2 + k]) }
                    off = 10
                }
                if pending.count >= off + len {
                    let payload = Array(pending[off..<(off + len)])
                    pending.removeFirst(off + len)
                    return (op, fin, payload)
                }
            }
            if !more() { return nil }
        }
    }

    /// The close code of the next close frame (skipping data frames), or nil.
    public func readCloseCode() -> UInt16? {
        while let f = readFrame() {
            if f.opcode == 8 { return f.payload.count >= 2 ? UInt16(f.payload[0]) << 8 | UInt16(f.payload[1]) : 1005 }
        }
        return nil
    }

    /// True when the server has closed the TCP connection (EOF) within the receive timeout.
    public func serverClosedTCP() -> Bool {
        let (_, end) = socket.readAll()
        return end == .closed || end == .reset
    }

    private func more() -> Bool {
        let b = socket.read(atLeast: 1)
        if b.isEmpty { return false }
        pending += b
        return true
    }

    private func find(_ b: [UInt8], _ needle: [UInt8]) -> Int? {
        guard b.count >= needle.count else { return nil }
        for i in 0...(b.count - needle.count) where Array(b[i..<(i + needle.count)]) == needle { return i }
        return nil
    }
}
