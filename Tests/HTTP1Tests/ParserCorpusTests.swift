import HTTP1
import NetCore
import TestSupport
import XCTest

/// What the pure parser makes of a byte stream: requests parsed and the error that ended it.
struct ParseOutcome: Equatable {
    var bodies: [[UInt8]] = []
    var error: HTTPParseError?
}

func parse(_ raw: [UInt8], pieceSize: Int, bodyLimit: Int = 65536) -> ParseOutcome {
    var parser = HTTPRequestParser(bodyLimit: bodyLimit)
    var buffer = ByteBuffer()
    var outcome = ParseOutcome()
    var offset = 0
    while offset < raw.count && outcome.error == nil {
        let end = min(raw.count, offset + pieceSize)
        buffer.append(Array(raw[offset..<end]))
        offset = end
        loop: while true {
            switch parser.next(&buffer) {
            case .failure(let e): outcome.error = e; break loop
            case .success(.needMore): break loop
            case .success(.head): parser.bodyLimit = bodyLimit
            case .success(.end(let body)): outcome.bodies.append(body)
            }
        }
    }
    return outcome
}

final class ParserCorpusTests: XCTestCase {
    func testCorpusIsLoaded() throws {
        let cases = try Corpus.httpRequests()
        XCTAssertGreaterThan(cases.count, 80)
        XCTAssertGreaterThan(cases.filter { $0.status == 400 }.count, 50)
    }

    /// Every corpus case, fed whole, in 7-byte pieces and one byte at a time: same verdict.
    func testCorpusVerdicts() throws {
        for c in try Corpus.httpRequests() {
            for piece in [c.raw.count, 7, 1] {
                let o = parse(c.raw, pieceSize: max(1, piece))
                if c.status == 200 {
                    XCTAssertNil(o.error, "\(c.name) [piece \(piece)]: \(o.error.map { "\($0)" } ?? "")")
                    XCTAssertEqual(o.bodies.count, c.responses, "\(c.name) [piece \(piece)]")
                    if let body = c.body { XCTAssertEqual(o.bodies.last.map { String(decoding: $0, as: UTF8.self) }, body, c.name) }
                } else {
                    XCTAssertEqual(o.error?.status, c.status, "\(c.name) [piece \(piece)]: got \(o)")
                }
            }
        }
    }

    func testPipelinedRequestsStayInBuffer() {
        var parser = HTTPRequestParser()
        var buffer = ByteBuffer("GET /a HTTP/1.1\r\nHost: x\r\n\r\nGET /b HTTP/1.1\r\nHost: x\r\n\r\n")
        guard case .success(.head(let h1)) = parser.next(&buffer) else { return XCTFail() }
        XCTAssertEqual(h1.target, "/a")
        guard case .success(.end) = parser.next(&buffer) else { return XCTFail() }
        XCTAssertTrue(parser.isIdle)
        XCTAssertGreaterThan(buffer.readableBytes, 0)
        guard case .success(.head(let h2)) = parser.next(&buffer) else { return XCTFail() }
        XCTAssertEqual(h2.target, "/b")
    }

    func testHeadFields() {
        var parser = HTTPRequestParser()
        var buffer = ByteBuffer("POST /p?q=a%20b&x HTTP/1.0\r\nX-A:  spaced value \t\r\nConnection: Keep-Alive\r\nContent-Length: 2\r\n\r\nhi")
        guard case .success(.head(let h)) = parser.next(&buffer) else { return XCTFail() }
        XCTAssertEqual(h.method, "POST")
        XCTAssertEqual(h.path, "/p")
        XCTAssertEqual(h.versionMinor, 0)
        XCTAssertEqual(h.headers.first("x-a"), "spaced value")
        XCTAssertTrue(h.keepAlive)
        let req = HTTPRequest(head: h, body: [])
        XCTAssertEqual(req.queryParameter("q"), "a b")
        XCTAssertEqual(req.queryParameter("x"), "")
        XCTAssertNil(req.queryParameter("nope"))
        guard case .success(.end(let body)) = parser.next(&buffer) else { return XCTFail() }
        XCTAssertEqual(body, Array("hi".utf8))
    }

    func testErrorIsSticky() {
        var parser = HTTPRequestParser()
        var buffer = ByteBuffer("GET / HTTP/1.1\nHost: a\n\n")
        guard case .failure(let e) = parser.next(&buffer) else { return XCTFail() }
        buffer.append("GET / HTTP/1.1\r\nHost: a\r\n\r\n")
        guard case .failure(let e2) = parser.next(&buffer) else { return XCTFail("parser resynchronised after an error") }
        XCTAssertEqual(e, e2)
    }

    func testSlowDripIsNotQuadratic() {
        // A 16 KiB header fed a byte at a time must not rescan from the start each time.
        var raw = Array("GET / HTTP/1.1\r\nHost: a\r\nX: ".utf8)
        raw += [UInt8](repeating: 97, count: 16000)
        raw += Array("\r\n\r\n".utf8)
        let o = parse(raw, pieceSize: 1)
        XCTAssertNil(o.error)
        XCTAssertEqual(o.bodies.count, 1)
    }

    func testRandomBytesNeverCrash() {
        var rng = SystemRandomNumberGenerator()
        for _ in 0..<2000 {
            let n = Int.random(in: 0..<200, using: &rng)
            var raw = (0..<n).map { _ in UInt8.random(in: 0...255, using: &rng) }
            if Bool.random(using: &rng) { raw = Array("POST / HTTP/1.1\r\nHost: a\r\nTransfer-Encoding: chunked\r\n\r\n".utf8) + raw }
            _ = parse(raw, pieceSize: Int.random(in: 1...16, using: &rng))
        }
    }
}

final class EncoderAndRouterTests: XCTestCase {
    func testChunkEncoding() {
        var out: [UInt8] = []
        [UInt8](repeating: 65, count: 300).withUnsafeBytes { HTTPResponseEncoder.chunk($0, into: &out) }
        XCTAssertEqual(Array(out.prefix(5)), Array("12c\r\n".utf8))
        XCTAssertEqual(Array(out.suffix(2)), [13, 10])
    }

    func testResponseHead() {
        var h = HTTPHeaders()
        h.add("Content-Type", "text/plain")
        let s = String(decoding: HTTPResponseEncoder.head(status: 404, headers: h, contentLength: 3, chunked: false, keepAlive: false, date: "D"), as: UTF8.self)
        XCTAssertEqual(s, "HTTP/1.1 404 Not Found\r\nContent-Type: text/plain\r\nDate: D\r\nCache-Control: no-store\r\n"
                       + "X-Content-Type-Options: nosniff\r\nContent-Length: 3\r\nConnection: close\r\n\r\n")
        // A handler's own caching policy wins; informational answers get no defaults.
        h.add("Cache-Control", "no-cache")
        let cached = String(decoding: HTTPResponseEncoder.head(status: 200, headers: h, contentLength: 0, chunked: false, keepAlive: true, date: "D"), as: UTF8.self)
        XCTAssertEqual(cached.components(separatedBy: "Cache-Control").count, 2)
        let info = String(decoding: HTTPResponseEncoder.head(status: 101, headers: HTTPHeaders(), contentLength: nil, chunked: false, keepAlive: true, date: "D"), as: UTF8.self)
        XCTAssertFalse(info.contains("Cache-Control"))
    }

    func testHTTPDate() {
        XCTAssertEqual(HTTPDate.format(epochSeconds: 784111777), "Sun, 06 Nov 1994 08:49:37 GMT")
    }

    func testRouter() {
        let r = Router()
        r.get("/v1/items/{id}") { _, _ in }
        r.post("/v1/items/{id}/cancel") { _, _ in }
        guard case .found(_, let caps) = r.match(method: "GET", path: "/v1/items/a%20b") else { return XCTFail() }
        XCTAssertEqual(caps["id"], "a b")
        guard case .methodNotAllowed(let allowed) = r.match(method: "DELETE", path: "/v1/items/1") else { return XCTFail() }
        XCTAssertEqual(allowed, ["GET"])
        guard case .notFound = r.match(method: "GET", path: "/v1/other") else { return XCTFail() }
        guard case .found = r.match(method: "HEAD", path: "/v1/items/1") else { return XCTFail("HEAD falls back to GET") }
        // A literal route shadows a capture at the same place, for matching and for Allow.
        r.get("/v1/items/pending") { _, _ in }
        r.add("DELETE", "/v1/items/{id}") { _, _ in }
        guard case .found(_, let none) = r.match(method: "GET", path: "/v1/items/pending"), none.isEmpty else { return XCTFail() }
        guard case .methodNotAllowed(let only) = r.match(method: "DELETE", path: "/v1/items/pending") else { return XCTFail() }
        XCTAssertEqual(only, ["GET"])
        guard case .found(_, let id) = r.match(method: "DELETE", path: "/v1/items/7") else { return XCTFail() }
        XCTAssertEqual(id["id"], "7")
    }
}
