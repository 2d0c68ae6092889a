/// An HTTP/1.1 response as the upstream client reads it: status, headers, then body bytes framed
/// by Content-Length, chunked encoding, or the connection's end. Incremental (feed any split of
/// the bytes), bounded (head size, field count, chunk-size line), strict where a lenient reading
/// could be fooled (conflicting lengths, bad chunk sizes), pure: no I/O, fuzzed.
public struct HTTPResponseHead: Sendable {
    public let status: Int
    public let headers: HTTPHeaders
    /// Whether the connection may carry another request after this response.
    public let keepAlive: Bool
}

public struct HTTPResponseError: Error, Sendable, CustomStringConvertible {
    public let description: String
    init(_ d: String) { description = d }
}

public struct HTTPResponseParser {
    public enum Event {
        case head(HTTPResponseHead)
        /// Body bytes, valid only during the callback.
        case body(UnsafeRawBufferPointer)
        /// The response is complete (the connection may be reused if `keepAlive`).
        case end
    }

    enum Framing { case length(Int), chunked, untilClose, none }
    enum State {
        case head
        case body(remaining: Int)
        case chunkSize
        case chunkData(remaining: Int)
        case chunkDataEnd   // the CRLF after a chunk's data
        case trailers
        case untilClose
        case done
    }

    public let maxHeadBytes: Int
    public let maxHeaderCount: Int
    private var state = State.head
    private var buffer: [UInt8] = []
    /// Set by a request that cannot have a body in its response (HEAD).
    public var expectNoBody = false
    /// Whether the connection may carry another request after the response read last.
    public private(set) var lastKeepAlive = true

    public init(maxHeadBytes: Int = 16 * 1024, maxHeaderCount: Int = 100) {
        self.maxHeadBytes = maxHeadBytes
        self.maxHeaderCount = maxHeaderCount
    }

    public var isDone: Bool { if case .done = state { return true }; return false }
    /// Whether the response has started (its head was read).
    public var hasHead: Bool { if case .head = state { return false }; return true }

    /// Consumes `bytes`; events are reported in order. Bytes after the end of the response are an
    /// error (this client never pipelines).
    public mutating func feed(_ bytes: UnsafeRawBufferPointer, _ emit: (Event) -> Void) throws(HTTPResponseError) {
        var i = 0
        let n = bytes.count
        while i < n {
            switch state {
            case .head:
                // Accumulate until the blank line; bounded.
                let start = i
                var found = -1
                while i < n {
                    let b = bytes[i]
                    buffer.append(b)
                    i += 1
                    if b == 10, buffer.count >= 2 {
                        let c = buffer.count
                        if buffer[c - 2] == 10 || (c >= 3 && buffer[c - 2] == 13 && buffer[c - 3] == 10) { found = i; break }
                    }
                    if buffer.count > maxHeadBytes { throw HTTPResponseError("response head larger than \(maxHeadBytes) bytes") }
                }
                _ = start
                guard found >= 0 else { return }
                let head = try parseHead(buffer)
                buffer.removeAll(keepingCapacity: true)
                if head.status >= 100 && head.status < 200 { continue }  // 100 Continue & co: the real one follows
                let frame = try framing(head)
                if case .untilClose = frame { lastKeepAlive = false } else { lastKeepAlive = head.keepAlive }
                emit(.head(head))
                switch frame {
                case .none: state = .done; emit(.end)
                case .length(let len): if len == 0 { state = .done; emit(.end) } else { state = .body(remaining: len) }
                case .chunked: state = .chunkSize
                case .untilClose: state = .untilClose
                }
            case .body(let remaining):
                let take = min(remaining, n - i)
                emit(.body(UnsafeRawBufferPointer(rebasing: bytes[i..<(i + take)])))
                i += take
                if take == remaining { state = .done; emit(.end) } else { state = .body(remaining: remaining - take) }
            case .chunkSize:
                while i < n {
                    let b = bytes[i]
                    i += 1
                    if b == 10 {
                        let size = try chunkSize(buffer)
                        buffer.removeAll(keepingCapacity: true)
                        state = size == 0 ? .trailers : .chunkData(remaining: size)
                        break
                    }
                    buffer.append(b)
                    if buffer.count > 1024 { throw HTTPResponseError("chunk-size line too long") }
                }
            case .chunkData(let remaining):
                let take = min(remaining, n - i)
                emit(.body(UnsafeRawBufferPointer(rebasing: bytes[i..<(i + take)])))
                i += take
                state = take == remaining ? .chunkDataEnd : .chunkData(remaining: remaining - take)
            case .chunkDataEnd:
                while i < n {
                    let b = bytes[i]
                    i += 1
                    if b == 10 {
                        guard buffer.isEmpty || buffer == [13] else { throw HTTPResponseError("chunk data longer than its size") }
                        buffer.removeAll(keepingCapacity: true)
                        state = .chunkSize
                        break
                    }
                    buffer.append(b)
                    if buffer.count > 1 || b != 13 { throw HTTPResponseError("chunk data longer than its size") }
                }
            case .trailers:
                // Trailer fields end with an empty line; they are read and ignored (bounded).
                while i < n {
                    let b = bytes[i]
                    i += 1
                    if b == 10 {
                        let line = buffer
                        buffer.removeAll(keepingCapacity: true)
                        if line.isEmpty || line == [13] { state = .done; emit(.end); break }
                        continue
                    }
                    buffer.append(b)
                    if buffer.count > maxHeadBytes { throw HTTPResponseError("trailers too large") }
                }
            case .untilClose:
                emit(.body(UnsafeRawBufferPointer(rebasing: bytes[i..<n])))
                i = n
            case .done:
                throw HTTPResponseError("bytes after the end of the response")
            }
        }
    }

    /// The connection ended: completes a response framed by the close, else it was cut short.
    public mutating func finish(_ emit: (Event) -> Void) throws(HTTPResponseError) {
        switch state {
        case .untilClose: state = .done; emit(.end)
        case .done: break
        case .head: throw HTTPResponseError(buffer.isEmpty ? "connection closed before a response" : "connection closed inside the response head")
        default: throw HTTPResponseError("connection closed before the end of the response body")
        }
    }

    func parseHead(_ bytes: [UInt8]) throws(HTTPResponseError) -> HTTPResponseHead {
        var lines: [ArraySlice<UInt8>] = []
        var from = 0
        for (k, b) in bytes.enumerated() where b == 10 {
            var end = k
            if end > from && bytes[end - 1] == 13 { end -= 1 }
            lines.append(bytes[from..<end])
            from = k + 1
        }
        while let last = lines.last, last.isEmpty { lines.removeLast() }
        guard let statusLine = lines.first else { throw HTTPResponseError("empty response head") }
        // HTTP/1.x SP 3DIGIT [SP reason]
        let s = Array(statusLine)
        guard s.count >= 12, s.starts(with: Array("HTTP/1.".utf8)), s[7] == 48 || s[7] == 49, s[8] == 32,
              (49...53).contains(s[9]), (48...57).contains(s[10]), (48...57).contains(s[11]), s.count == 12 || s[12] == 32 else {
            throw HTTPResponseError("malformed status line")
        }
        let status = Int(s[9] - 48) * 100 + Int(s[10] - 48) * 10 + Int(s[11] - 48)
        let http10 = s[7] == 48
        var headers = HTTPHeaders()
        for line in lines.dropFirst() {
            guard headers.fields.count < maxHeaderCount else { throw HTTPResponseError("more than \(maxHeaderCount) header fields") }
            guard let colon = line.firstIndex(of: 58), colon > line.startIndex else { throw HTTPResponseError("malformed header field") }
            let name = line[line.startIndex..<colon]
            guard name.allSatisfy({ $0 > 32 && $0 < 127 }) else { throw HTTPResponseError("malformed header name") }
            var value = line[(colon + 1)...]
            while let f = value.first, f == 32 || f == 9 { value = value.dropFirst() }
            while let l = value.last, l == 32 || l == 9 { value = value.dropLast() }
            guard !value.contains(where: { ($0 < 32 && $0 != 9) || $0 == 127 }) else { throw HTTPResponseError("control character in a header value") }
            headers.add(String(decoding: name, as: UTF8.self), String(decoding: value, as: UTF8.self))
        }
        let connection = headers.tokens("connection")
        let keepAlive = http10 ? connection.contains("keep-alive") : !connection.contains("close")
        return HTTPResponseHead(status: status, headers: headers, keepAlive: keepAlive)
    }

    func framing(_ head: HTTPResponseHead) throws(HTTPResponseError) -> Framing {
        if expectNoBody || head.status == 204 || head.status == 304 { return .none }
        let te = head.headers.tokens("transfer-encoding")
        let lengths = head.headers.all("content-length")
        if !te.isEmpty {
            guard te == ["chunked"] else { throw HTTPResponseError("unsupported transfer-encoding") }
            guard lengths.isEmpty else { throw HTTPResponseError("both content-length and transfer-encoding") }
            return .chunked
        }
        if !lengths.isEmpty {
            let distinct = Set(lengths.flatMap { $0.split(separator: ",").map { $0.trimmingSpaces() } })
            guard distinct.count == 1, let v = distinct.first, !v.isEmpty, v.utf8.count <= 15, v.utf8.allSatisfy({ $0 >= 48 && $0 <= 57 }),
                  let len = Int(v) else { throw HTTPResponseError("malformed content-length") }
            return .length(len)
        }
        return .untilClose
    }

    func chunkSize(_ line: [UInt8]) throws(HTTPResponseError) -> Int {
        var l = line[...]
        if l.last == 13 { l = l.dropLast() }
        if let semi = l.firstIndex(of: 59) { l = l[..<semi] }  // chunk extensions are ignored
        while let last = l.last, last == 32 || last == 9 { l = l.dropLast() }
        guard !l.isEmpty, l.count <= 8 else { throw HTTPResponseError("bad chunk size") }
        var v = 0
        for c in l {
            let d: Int
            switch c {
            case 48...57: d = Int(c - 48)
            case 65...70: d = Int(c - 55)
            case 97...102: d = Int(c - 87)
            default: throw HTTPResponseError("bad chunk size")
            }
            v = v * 16 + d
        }
        return v
    }
}

/// Server-sent events (the WHATWG event-stream format) read incrementally: lines split on LF,
/// CRLF or CR; `data` lines joined with LF; an empty line dispatches; comments (`:`) are reported
/// so callers can count them as liveness. Bounded: a line or an event's data over `maxEventBytes`
/// is an error.
public struct SSEParser {
    public enum Event: Equatable {
        case message(event: String?, data: String)
        case comment
    }

    public let maxEventBytes: Int
    private var line: [UInt8] = []
    private var data: [UInt8] = []
    private var hasData = false
    private var eventName: String?
    private var lastWasCR = false
    private var sawBOM = false
    private var started = false

    public init(maxEventBytes: Int = 1 << 20) { self.maxEventBytes = maxEventBytes }

    public mutating func feed(_ bytes: UnsafeRawBufferPointer, _ emit: (Event) -> Void) throws(HTTPResponseError) {
        for b in bytes {
            if !started {
                started = true
                if b == 0xEF { sawBOM = true; line.append(b); continue }
            }
            if b == 10 && lastWasCR { lastWasCR = false; continue }
            lastWasCR = b == 13
            if b == 10 || b == 13 {
                try endLine(emit)
                continue
            }
            line.append(b)
            if line.count > maxEventBytes { throw HTTPResponseError("event-stream line longer than \(maxEventBytes) bytes") }
        }
    }

    private mutating func endLine(_ emit: (Event) -> Void) throws(HTTPResponseError) {
        var l = line[...]
        line.removeAll(keepingCapacity: true)
        if sawBOM {
            sawBOM = false
            if l.starts(with: [0xEF, 0xBB, 0xBF]) { l = l.dropFirst(3) }
        }
        if l.isEmpty {
            if hasData {
                emit(.message(event: eventName, data: String(decoding: data, as: UTF8.self)))
            }
            data.removeAll(keepingCapacity: true)
            hasData = false
            eventName = nil
            return
        }
        if l.first == 58 { emit(.comment); return }
        var field = l, value = l[l.endIndex...]
        if let colon = l.firstIndex(of: 58) {
            field = l[..<colon]
            value = l[(colon + 1)...]
            if value.first == 32 { value = value.dropFirst() }
        }
        switch String(decoding: field, as: UTF8.self) {
        case "data":
            if hasData { data.append(10) }
            data.append(contentsOf: value)
            hasData = true
            if data.count > maxEventBytes { throw HTTPResponseError("event data larger than \(maxEventBytes) bytes") }
        case "event":
            eventName = String(decoding: value, as: UTF8.self)
        default:
            break  // id, retry and unknown fields: not used by model servers' streams
        }
    }
}
