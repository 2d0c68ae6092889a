/// A request's head as the parser accepted it. Header names keep their case; look-ups ignore it.
public struct HTTPRequestHead: Sendable {
    public var method: String
    public var target: String
    public var versionMinor: Int  // HTTP/1.x
    public var headers: HTTPHeaders

    public var path: Substring {
        if let q = target.firstIndex(of: "?") { return target[..<q] }
        return target[...]
    }
    public var query: Substring? {
        guard let q = target.firstIndex(of: "?") else { return nil }
        return target[target.index(after: q)...]
    }

    /// RFC 9112 §9.3: HTTP/1.1 persists unless "close"; HTTP/1.0 only with "keep-alive".
    public var keepAlive: Bool {
        let tokens = headers.tokens("connection")
        if versionMinor >= 1 { return !tokens.contains("close") }
        return tokens.contains("keep-alive")
    }
}

/// Ordered header fields with case-insensitive look-up.
public struct HTTPHeaders: Sendable, Sequence {
    public private(set) var fields: [(name: String, value: String)] = []

    public init() {}
    public init(_ fields: [(String, String)]) {
        self.fields = fields.map { (name: $0.0, value: $0.1) }
    }

    public mutating func add(_ name: String, _ value: String) { fields.append((name, value)) }

    public mutating func replace(_ name: String, _ value: String) {
        fields.removeAll { HTTPHeaders.equalFold($0.name, name) }
        fields.append((name, value))
    }

    public func first(_ name: String) -> String? {
        fields.first { HTTPHeaders.equalFold($0.name, name) }?.value
    }

    public func all(_ name: String) -> [String] {
        fields.filter { HTTPHeaders.equalFold($0.name, name) }.map(\.value)
    }

    public func count(_ name: String) -> Int {
        fields.reduce(0) { $0 + (HTTPHeaders.equalFold($1.name, name) ? 1 : 0) }
    }

    /// Comma-separated tokens of every field with this name, lowercased.
    public func tokens(_ name: String) -> [String] {
        all(name).flatMap { $0.split(separator: ",") }.map { $0.trimmingSpaces().lowercased() }
    }

    public var count: Int { fields.count }

    public func makeIterator() -> IndexingIterator<[(name: String, value: String)]> { fields.makeIterator() }

    static func equalFold(_ a: String, _ b: String) -> Bool {
        let au = a.utf8, bu = b.utf8
        guard au.count == bu.count else { return false }
        for (x, y) in zip(au, bu) where x != y {
            if asciiLower(x) != asciiLower(y) { return false }
        }
        return true
    }
}

@inline(__always) func asciiLower(_ c: UInt8) -> UInt8 { (c >= 65 && c <= 90) ? c | 0x20 : c }

extension StringProtocol {
    func trimmingSpaces() -> String {
        var s = Substring(self)
        while let f = s.first, f == " " || f == "\t" { s = s.dropFirst() }
        while let l = s.last, l == " " || l == "\t" { s = s.dropLast() }
        return String(s)
    }
}

/// A complete request: head plus the whole (bounded) body.
public struct HTTPRequest: Sendable {
    public var head: HTTPRequestHead
    public var body: [UInt8]
    public var method: String { head.method }
    public var path: Substring { head.path }
    public var headers: HTTPHeaders { head.headers }
    /// Path parameters filled in by the router, e.g. `{id}`.
    public var pathParameters: [String: String] = [:]

    public init(head: HTTPRequestHead, body: [UInt8]) {
        self.head = head
        self.body = body
    }

    /// Decoded query parameters (application/x-www-form-urlencoded rules).
    public func queryParameter(_ name: String) -> String? {
        guard let q = head.query else { return nil }
        for pair in q.split(separator: "&", omittingEmptySubsequences: true) {
            let kv = pair.split(separator: "=", maxSplits: 1, omittingEmptySubsequences: false)
            if PercentDecoding.decode(kv[0]) == name {
                return kv.count > 1 ? PercentDecoding.decode(kv[1]) : ""
            }
        }
        return nil
    }
}

public enum PercentDecoding {
    /// Decodes %XX and '+'; invalid escapes are kept literally; invalid UTF-8 is repaired.
    public static func decode<S: StringProtocol>(_ s: S) -> String {
        var out: [UInt8] = []
        let u = Array(s.utf8)
        var i = 0
        while i < u.count {
            let c = u[i]
            if c == UInt8(ascii: "%"), i + 2 < u.count, let h = hexValue(u[i + 1]), let l = hexValue(u[i + 2]) {
                out.append(h << 4 | l)
                i += 3
            } else {
                out.append(c == UInt8(ascii: "+") ? UInt8(ascii: " ") : c)
                i += 1
            }
        }
        return String(decoding: out, as: UTF8.self)
    }
}

@inline(__always) func hexValue(_ c: UInt8) -> UInt8? {
    switch c {
    case 48...57: return c - 48
    case 65...70: return c - 55
    case 97...102: return c - 87
    default: return nil
    }
}

/// Status codes and reason phrases the server uses.
public enum HTTPStatus {
    public static func reason(_ code: Int) -> String {
        switch code {
        case 100: return "Continue"
        case 101: return "Switching Protocols"
        case 200: return "OK"
        case 201: return "Created"
        case 202: return "Accepted"
        case 204: return "No Content"
        case 304: return "Not Modified"
        case 400: return "Bad Request"
        case 401: return "Unauthorized"
        case 403: return "Forbidden"
        case 404: return "Not Found"
        case 405: return "Method Not Allowed"
        case 408: return "Request Timeout"
        case 409: return "Conflict"
        case 411: return "Length Required"
        case 413: return "Content Too Large"
        case 414: return "URI Too Long"
        case 415: return "Unsupported Media Type"
        case 426: return "Upgrade Required"
        case 429: return "Too Many Requests"
        case 431: return "Request Header Fields Too Large"
        case 500: return "Internal Server Error"
        case 501: return "Not Implemented"
        case 503: return "Service Unavailable"
        case 505: return "HTTP Version Not Supported"
        default: return "Status \(code)"
        }
    }
}
