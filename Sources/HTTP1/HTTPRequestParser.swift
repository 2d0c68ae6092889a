import NetCore

/// Why a request was refused. `status` is what the client gets; the connection is then closed
/// (a strict server never tries to find the next request after a framing error).
public struct HTTPParseError: Error, Equatable, Sendable, CustomStringConvertible {
    public let status: Int
    public let reason: String
    public init(_ status: Int, _ reason: String) { self.status = status; self.reason = reason }
    public var description: String { "\(status) \(reason)" }
}

public struct HTTPParserLimits: Sendable {
    public var maxRequestLineBytes = 8 * 1024
    public var maxHeaderBytes = 16 * 1024
    public var maxHeaderCount = 100
    public var maxChunkLineBytes = 4 * 1024
    public var maxTrailerBytes = 16 * 1024
    public init() {}
}

public enum HTTPParserEvent: Sendable {
    /// Not enough bytes yet.
    case needMore
    /// A complete head. Set `bodyLimit` now if the route allows a different body size.
    case head(HTTPRequestHead)
    /// The body is complete; the parser is ready for the next (pipelined) request.
    case end(body: [UInt8])
}

/// A strict HTTP/1.1 request parser (RFC 9110/9112) as a pure state machine over a `ByteBuffer`.
///
/// It consumes bytes from the buffer as it accepts them and never looks past the end of the current
/// request, so pipelined requests stay in the buffer for the next call. Every ambiguity that could
/// let two parsers disagree on where a request ends (smuggling) is an error: CL with TE, duplicate
/// CL, TE other than `chunked`, obs-fold, bare CR/LF, whitespace before a colon, control bytes.
public struct HTTPRequestParser: Sendable {
    enum State: Sendable {
        case requestLine
        case headers
        case headComplete(hasBody: Bool)
        case fixedBody(remaining: Int)
        case chunkSize
        case chunkData(remaining: Int)
        case chunkDataEnd
        case trailers
        case failed(HTTPParseError)
    }

    public var limits: HTTPParserLimits
    /// Largest body accepted for the current request; bigger → 413.
    public var bodyLimit: Int
    private let defaultBodyLimit: Int
    private var state: State = .requestLine
    /// Bytes of the current, unfinished line already checked (so a slow drip is not rescanned).
    private var scanned = 0
    private var headBytes = 0
    private var trailerBytes = 0
    private var method = ""
    private var target = ""
    private var minor = 1
    private var headers = HTTPHeaders()
    private var contentLength: Int?
    private var chunked = false
    private var body: [UInt8] = []

    public init(limits: HTTPParserLimits = HTTPParserLimits(), bodyLimit: Int = 1 << 20) {
        self.limits = limits
        self.bodyLimit = bodyLimit
        self.defaultBodyLimit = bodyLimit
    }

    /// True between requests: nothing of a next request has been accepted yet.
    public var isIdle: Bool {
        if case .requestLine = state { return scanned == 0 && headBytes == 0 }
        return false
    }

    /// True once the head is in and the body is being read.
    public var isReadingBody: Bool {
        switch state {
        case .fixedBody, .chunkSize, .chunkData, .chunkDataEnd, .trailers, .headComplete: return true
        default: return false
        }
    }

    public mutating func next(_ buffer: inout ByteBuffer) -> Result<HTTPParserEvent, HTTPParseError> {
        while true {
            let step = advance(&buffer)
            switch step {
            case .continue: continue
            case .event(let e): return .success(e)
            case .fail(let e):
                state = .failed(e)
                return .failure(e)
            }
        }
    }

    private enum Step { case `continue`, event(HTTPParserEvent), fail(HTTPParseError) }

    private enum Line {
        case line(start: Int, end: Int)  // offsets relative to readerIndex, excluding CRLF
        case needMore
        case bad(String)
    }

    /// Finds the next CRLF-terminated line. Bare CR or bare LF is an error (RFC 9112 §2.2 allows
    /// servers to accept bare LF; we do not, since front ends that disagree enable smuggling).
    private mutating func nextLine(_ buffer: ByteBuffer, max: Int) -> (Line, tooLong: Bool) {
        buffer.withReadableBytes { p -> (Line, Bool) in
            var i = scanned
            let n = p.count
            while i < n {
                let c = p[i]
                if c == 10 {
                    if i == 0 || p[i - 1] != 13 { return (.bad("bare LF"), false) }
                    scanned = 0
                    return (.line(start: 0, end: i - 1), false)
                }
                if c == 13 {
                    if i + 1 < n {
                        if p[i + 1] != 10 { return (.bad("bare CR"), false) }
                    } else {
                        break  // CR at the end: wait for the next byte
                    }
                }
                i += 1
                if i > max { return (.needMore, true) }
            }
            scanned = i
            return (.needMore, i > max)
        }
    }

    private mutating func advance(_ buffer: inout ByteBuffer) -> Step {
        switch state {
        case .failed(let e):
            return .fail(e)

        case .requestLine:
            let (line, tooLong) = nextLine(buffer, max: limits.maxRequestLineBytes)
            switch line {
            case .bad(let why): return .fail(HTTPParseError(400, why))
            case .needMore: return tooLong ? .fail(HTTPParseError(414, "request line too long")) : .event(.needMore)
            case .line(_, let end):
                if end == 0 {
                    // RFC 9112 §2.2: ignore empty lines before a request line (bounded by the head limit).
                    headBytes += 2
                    buffer.consume(2)
                    if headBytes > limits.maxHeaderBytes { return .fail(HTTPParseError(400, "too many empty lines")) }
                    return .continue
                }
                if let e = parseRequestLine(buffer.readableSlice(0, count: end)) { return .fail(e) }
                buffer.consume(end + 2)
                headBytes = 0
                state = .headers
                return .continue
            }

        case .headers:
            let room = limits.maxHeaderBytes - headBytes
            let (line, tooLong) = nextLine(buffer, max: room)
            switch line {
            case .bad(let why): return .fail(HTTPParseError(400, why))
            case .needMore: return tooLong ? .fail(HTTPParseError(431, "header block too large")) : .event(.needMore)
            case .line(_, let end):
                headBytes += end + 2
                if headBytes > limits.maxHeaderBytes { return .fail(HTTPParseError(431, "header block too large")) }
                if end == 0 {
                    buffer.consume(2)
                    return finishHead()
                }
                if headers.count >= limits.maxHeaderCount { return .fail(HTTPParseError(431, "too many header fields")) }
                switch parseField(buffer.readableSlice(0, count: end)) {
                case .failure(let e): return .fail(e)
                case .success(let f): headers.add(f.0, f.1)
                }
                buffer.consume(end + 2)
                return .continue
            }

        case .headComplete(let hasBody):
            if !hasBody { return finishMessage() }
            if chunked {
                state = .chunkSize
            } else {
                let cl = contentLength ?? 0
                if cl > bodyLimit { return .fail(HTTPParseError(413, "body larger than \(bodyLimit) bytes")) }
                body.reserveCapacity(cl)
                state = .fixedBody(remaining: cl)
            }
            return .continue

        case .fixedBody(let remaining):
            if remaining == 0 { return finishMessage() }
            if buffer.isEmpty { return .event(.needMore) }
            let take = min(remaining, buffer.readableBytes)
            body.append(contentsOf: buffer.readableSlice(0, count: take))
            buffer.consume(take)
            state = .fixedBody(remaining: remaining - take)
            return .continue

        case .chunkSize:
            let (line, tooLong) = nextLine(buffer, max: limits.maxChunkLineBytes)
            switch line {
            case .bad(let why): return .fail(HTTPParseError(400, why))
            case .needMore: return tooLong ? .fail(HTTPParseError(400, "chunk size line too long")) : .event(.needMore)
            case .line(_, let end):
                let size: Int
                switch parseChunkSize(buffer.readableSlice(0, count: end)) {
                case .failure(let e): return .fail(e)
                case .success(let s): size = s
                }
                buffer.consume(end + 2)
                if size == 0 {
                    trailerBytes = 0
                    state = .trailers
                } else {
                    if size > bodyLimit - body.count { return .fail(HTTPParseError(413, "body larger than \(bodyLimit) bytes")) }
                    state = .chunkData(remaining: size)
                }
                return .continue
            }

        case .chunkData(let remaining):
            if buffer.isEmpty { return .event(.needMore) }
            let take = min(remaining, buffer.readableBytes)
            body.append(contentsOf: buffer.readableSlice(0, count: take))
            buffer.consume(take)
            state = remaining == take ? .chunkDataEnd : .chunkData(remaining: remaining - take)
            return .continue

        case .chunkDataEnd:
            if buffer.readableBytes < 2 {
                if buffer.readableBytes == 1 && buffer[0] != 13 { return .fail(HTTPParseError(400, "chunk data not followed by CRLF")) }
                return .event(.needMore)
            }
            guard buffer[0] == 13, buffer[1] == 10 else { return .fail(HTTPParseError(400, "chunk data not followed by CRLF")) }
            buffer.consume(2)
            state = .chunkSize
            return .continue

        case .trailers:
            let (line, tooLong) = nextLine(buffer, max: limits.maxTrailerBytes - trailerBytes)
            switch line {
            case .bad(let why): return .fail(HTTPParseError(400, why))
            case .needMore: return tooLong ? .fail(HTTPParseError(431, "trailer section too large")) : .event(.needMore)
            case .line(_, let end):
                trailerBytes += end + 2
                if end == 0 {
                    buffer.consume(2)
                    return finishMessage()
                }
                // Trailers are checked for syntax and dropped: nothing here may change framing.
                if case .failure(let e) = parseField(buffer.readableSlice(0, count: end)) { return .fail(e) }
                buffer.consume(end + 2)
                return .continue
            }
        }
    }

    private mutating func finishHead() -> Step {
        let hostCount = headers.count("host")
        if minor == 1 && hostCount != 1 { return .fail(HTTPParseError(400, hostCount == 0 ? "missing Host" : "duplicate Host")) }
        if hostCount > 1 { return .fail(HTTPParseError(400, "duplicate Host")) }
        if let host = headers.first("host"), !HTTPRequestParser.validHost(host) {
            return .fail(HTTPParseError(400, "invalid Host"))
        }
        let cls = headers.all("content-length")
        let tes = headers.all("transfer-encoding")
        if !cls.isEmpty && !tes.isEmpty { return .fail(HTTPParseError(400, "both Content-Length and Transfer-Encoding")) }
        if cls.count > 1 { return .fail(HTTPParseError(400, "duplicate Content-Length")) }
        if let cl = cls.first {
            guard !cl.isEmpty, cl.utf8.count <= 15, cl.utf8.allSatisfy({ $0 >= 48 && $0 <= 57 }), let v = Int(cl) else {
                return .fail(HTTPParseError(400, "invalid Content-Length"))
            }
            contentLength = v
        }
        if !tes.isEmpty {
            if minor == 0 { return .fail(HTTPParseError(400, "Transfer-Encoding in HTTP/1.0")) }
            if tes.count > 1 || tes[0].lowercased() != "chunked" {
                return .fail(HTTPParseError(400, "Transfer-Encoding must be exactly chunked"))
            }
            chunked = true
        }
        let head = HTTPRequestHead(method: method, target: target, versionMinor: minor, headers: headers)
        let hasBody = chunked || (contentLength ?? 0) > 0
        state = .headComplete(hasBody: hasBody)
        return .event(.head(head))
    }

    private mutating func finishMessage() -> Step {
        let b = body
        reset()
        return .event(.end(body: b))
    }

    private mutating func reset() {
        state = .requestLine
        scanned = 0
        headBytes = 0
        method = ""
        target = ""
        minor = 1
        headers = HTTPHeaders()
        contentLength = nil
        chunked = false
        body = []
        bodyLimit = defaultBodyLimit
    }

    // MARK: line grammars

    private mutating func parseRequestLine(_ line: ArraySlice<UInt8>) -> HTTPParseError? {
        // method SP request-target SP HTTP-version, single spaces only (RFC 9112 §3).
        guard let sp1 = line.firstIndex(of: 32) else { return HTTPParseError(400, "malformed request line") }
        let m = line[line.startIndex..<sp1]
        guard !m.isEmpty, m.allSatisfy(HTTPRequestParser.isTChar) else { return HTTPParseError(400, "invalid method") }
        let rest = line[(sp1 + 1)...]
        guard let sp2 = rest.firstIndex(of: 32) else { return HTTPParseError(400, "malformed request line") }
        let t = rest[rest.startIndex..<sp2]
        let v = rest[(sp2 + 1)...]
        guard !t.isEmpty, t.allSatisfy({ $0 > 32 && $0 < 127 }) else { return HTTPParseError(400, "invalid request target") }
        let version = Array(v)
        guard version.count == 8, version[0..<5].elementsEqual("HTTP/".utf8), version[6] == 46,
              (48...57).contains(version[5]), (48...57).contains(version[7]) else {
            return HTTPParseError(400, "invalid HTTP version")
        }
        guard version[5] == 49, version[7] == 48 || version[7] == 49 else { return HTTPParseError(505, "HTTP version not supported") }
        method = String(decoding: m, as: UTF8.self)
        minor = Int(version[7] - 48)
        var tgt = String(decoding: t, as: UTF8.self)
        if tgt.first == "/" {
            // origin-form
        } else if tgt == "*" {
            guard method == "OPTIONS" else { return HTTPParseError(400, "asterisk-form only for OPTIONS") }
        } else if let rest = HTTPRequestParser.stripScheme(tgt) {
            // absolute-form (RFC 9112 §3.2.2): keep only the path and query for routing.
            if let p = rest.firstIndex(where: { $0 == "/" || $0 == "?" }) {
                tgt = rest[p] == "?" ? "/" + rest[p...] : String(rest[p...])
            } else {
                tgt = "/"
            }
        } else {
            return HTTPParseError(400, "unsupported request-target form")
        }
        target = tgt
        return nil
    }

    private func parseField(_ line: ArraySlice<UInt8>) -> Result<(String, String), HTTPParseError> {
        guard let first = line.first else { return .failure(HTTPParseError(400, "empty field line")) }
        if first == 32 || first == 9 { return .failure(HTTPParseError(400, "obs-fold or leading whitespace in field line")) }
        var i = line.startIndex
        while i < line.endIndex, line[i] != 58 {
            if !HTTPRequestParser.isTChar(line[i]) {
                if line[i] == 32 || line[i] == 9 { return .failure(HTTPParseError(400, "whitespace before colon")) }
                return .failure(HTTPParseError(400, "invalid character in field name"))
            }
            i += 1
        }
        guard i < line.endIndex, i > line.startIndex else { return .failure(HTTPParseError(400, "malformed field line")) }
        let name = String(decoding: line[line.startIndex..<i], as: UTF8.self)
        var s = i + 1, e = line.endIndex
        while s < e, line[s] == 32 || line[s] == 9 { s += 1 }
        while e > s, line[e - 1] == 32 || line[e - 1] == 9 { e -= 1 }
        let value = line[s..<e]
        for c in value where !(c == 9 || (c >= 32 && c != 127)) {
            return .failure(HTTPParseError(400, "control character in field value"))
        }
        return .success((name, String(decoding: value, as: UTF8.self)))
    }

    private func parseChunkSize(_ line: ArraySlice<UInt8>) -> Result<Int, HTTPParseError> {
        var size = 0
        var digits = 0
        var i = line.startIndex
        while i < line.endIndex, let h = hexValue(line[i]) {
            digits += 1
            if digits > 15 { return .failure(HTTPParseError(400, "chunk size too large")) }
            size = size << 4 | Int(h)
            i += 1
        }
        guard digits > 0 else { return .failure(HTTPParseError(400, "invalid chunk size")) }
        if i == line.endIndex { return .success(size) }
        // chunk-ext = *( BWS ";" BWS name [ BWS "=" BWS value ] ): whitespace only before a ';'.
        var j = i
        while j < line.endIndex, line[j] == 32 || line[j] == 9 { j += 1 }
        guard j < line.endIndex, line[j] == 59 else { return .failure(HTTPParseError(400, "invalid chunk size")) }
        for c in line[j...] where !(c == 9 || (c >= 32 && c != 127)) {
            return .failure(HTTPParseError(400, "control character in chunk extension"))
        }
        return .success(size)
    }

    static func stripScheme(_ t: String) -> Substring? {
        for scheme in ["http://", "https://"] where t.utf8.count > scheme.utf8.count {
            if t.utf8.prefix(scheme.utf8.count).map(asciiLower).elementsEqual(scheme.utf8) {
                return t.dropFirst(scheme.count)
            }
        }
        return nil
    }

    static func isTChar(_ c: UInt8) -> Bool {
        switch c {
        case 48...57, 65...90, 97...122: return true
        case 33, 35, 36, 37, 38, 39, 42, 43, 45, 46, 94, 95, 96, 124, 126: return true
        default: return false
        }
    }

    /// uri-host [ ":" port ]: reg-name, IPv4 or an IP-literal in brackets (RFC 3986 §3.2.2).
    static func validHost(_ host: String) -> Bool {
        for c in host.utf8 {
            switch c {
            case 48...57, 65...90, 97...122: continue
            case UInt8(ascii: "-"), UInt8(ascii: "."), UInt8(ascii: "_"), UInt8(ascii: "~"), UInt8(ascii: ":"),
                 UInt8(ascii: "["), UInt8(ascii: "]"), UInt8(ascii: "%"), UInt8(ascii: "!"), UInt8(ascii: "$"),
                 UInt8(ascii: "&"), UInt8(ascii: "'"), UInt8(ascii: "("), UInt8(ascii: ")"), UInt8(ascii: "*"),
                 UInt8(ascii: "+"), UInt8(ascii: ","), UInt8(ascii: ";"), UInt8(ascii: "="):
                continue
            default: return false
            }
        }
        return true
    }
}
