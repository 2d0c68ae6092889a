import Foundation
import NetCore
#if canImport(Glibc)
import Glibc
#endif

/// A plain blocking TCP client for tests: the server under test gets real sockets, and the test
/// reads exactly what went over the wire.
public final class BlockingClient {
    public let fd: Int32

    public init(port: Int, host: String = "127.0.0.1", timeoutMs: Int = 3000) throws {
        fd = socket(AF_INET, Int32(SOCK_STREAM.rawValue), 0)
        guard fd >= 0 else { throw TestError("socket failed") }
        var tv = timeval(tv_sec: timeoutMs / 1000, tv_usec: (timeoutMs % 1000) * 1000)
        setsockopt(fd, SOL_SOCKET, SO_RCVTIMEO, &tv, socklen_t(MemoryLayout<timeval>.size))
        setsockopt(fd, SOL_SOCKET, SO_SNDTIMEO, &tv, socklen_t(MemoryLayout<timeval>.size))
        var addr = sockaddr_in()
        addr.sin_family = sa_family_t(AF_INET)
        addr.sin_port = in_port_t(UInt16(port).bigEndian)
        inet_pton(AF_INET, host, &addr.sin_addr)
        let r = withUnsafePointer(to: &addr) {
            $0.withMemoryRebound(to: sockaddr.self, capacity: 1) { Glibc.connect(fd, $0, socklen_t(MemoryLayout<sockaddr_in>.size)) }
        }
        guard r == 0 else { Glibc.close(fd); throw TestError("connect failed: \(errno)") }
    }

    deinit { Glibc.close(fd) }

    public func send(_ bytes: [UInt8]) throws {
        var off = 0
        while off < bytes.count {
            let n = bytes.withUnsafeBytes { Glibc.send(fd, $0.baseAddress! + off, bytes.count - off, Int32(MSG_NOSIGNAL)) }
            if n <= 0 { throw TestError("send failed: \(errno)") }
            off += n
        }
    }

    public func send(_ s: String) throws { try send(Array(s.utf8)) }

    public enum ReadEnd: Equatable { case closed, timedOut, reset }

    /// Reads until the peer closes or the receive timeout passes.
    public func readAll() -> ([UInt8], ReadEnd) {
        var out: [UInt8] = []
        var buf = [UInt8](repeating: 0, count: 65536)
        while true {
            let n = buf.withUnsafeMutableBytes { Glibc.recv(fd, $0.baseAddress, 65536, 0) }
            if n > 0 { out.append(contentsOf: buf[0..<n]); continue }
            if n == 0 { return (out, .closed) }
            if errno == EAGAIN || errno == EWOULDBLOCK { return (out, .timedOut) }
            if errno == EINTR { continue }
            return (out, .reset)
        }
    }

    /// Reads at least `count` bytes (or fewer if the connection ends first).
    public func read(atLeast count: Int) -> [UInt8] {
        var out: [UInt8] = []
        var buf = [UInt8](repeating: 0, count: 65536)
        while out.count < count {
            let n = buf.withUnsafeMutableBytes { Glibc.recv(fd, $0.baseAddress, 65536, 0) }
            if n > 0 { out.append(contentsOf: buf[0..<n]) } else if n < 0 && errno == EINTR { continue } else { break }
        }
        return out
    }

    public func shutdownWrite() { Glibc.shutdown(fd, Int32(SHUT_WR)) }
}

public struct TestError: Error, CustomStringConvertible {
    public let description: String
    public init(_ d: String) { description = d }
}

/// A response parsed from raw bytes (Content-Length or chunked framing).
public struct ParsedResponse {
    public var status: Int
    public var headers: [(String, String)]
    public var body: [UInt8]
    public func header(_ name: String) -> String? {
        headers.first { $0.0.lowercased() == name.lowercased() }?.1
    }
}

public enum ResponseParser {
    /// Parses as many complete responses as the bytes hold; also returns the unparsed rest.
    public static func parseAll(_ bytes: [UInt8], headRequests: Bool = false) -> ([ParsedResponse], [UInt8]) {
        var out: [ParsedResponse] = []
        var i = 0
        while let r = parseOne(bytes, from: i) {
            out.append(r.0)
            i = r.1
        }
        return (out, Array(bytes[i...]))
    }

    static func parseOne(_ b: [UInt8], from start: Int) -> (ParsedResponse, Int)? {
        guard let headEnd = find(b, [13, 10, 13, 10], from: start) else { return nil }
        let head = String(decoding: b[start..<headEnd], as: UTF8.self)
        var lines = head.components(separatedBy: "\r\n")
        let statusLine = lines.removeFirst().split(separator: " ")
        guard statusLine.count >= 2, let status = Int(statusLine[1]) else { return nil }
        let headers = lines.compactMap { l -> (String, String)? in
            guard let c = l.firstIndex(of: ":") else { return nil }
            return (String(l[..<c]), l[l.index(after: c)...].trimmingCharacters(in: .whitespaces))
        }
        var r = ParsedResponse(status: status, headers: headers, body: [])
        var i = headEnd + 4
        if status == 101 || status == 100 || status == 204 || status == 304 { return (r, i) }
        if r.header("transfer-encoding")?.lowercased() == "chunked" {
            while true {
                guard let le = find(b, [13, 10], from: i) else { return nil }
                let sizeText = String(decoding: b[i..<le], as: UTF8.self).split(separator: ";")[0]
                guard let size = Int(sizeText, radix: 16) else { return nil }
                i = le + 2
                if size == 0 {
                    guard let te = find(b, [13, 10], from: i) else { return nil }
                    return (r, te + 2)
                }
                guard i + size + 2 <= b.count else { return nil }
                r.body.append(contentsOf: b[i..<(i + size)])
                i += size + 2
            }
        }
        let len = Int(r.header("content-length") ?? "0") ?? 0
        guard i + len <= b.count else { return nil }
        r.body = Array(b[i..<(i + len)])
        return (r, i + len)
    }

    static func find(_ b: [UInt8], _ needle: [UInt8], from: Int) -> Int? {
        guard b.count >= needle.count, from <= b.count - needle.count else { return nil }
        outer: for i in from...(b.count - needle.count) {
            for k in 0..<needle.count where b[i + k] != needle[k] { continue outer }
            return i
        }
        return nil
    }
}
