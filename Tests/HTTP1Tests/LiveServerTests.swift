import HTTP1
import Runtime
import NetCore
import TestSupport
import XCTest
#if canImport(Glibc)
import Glibc
#endif

/// The HTTP server on port 0 with real sockets.
final class LiveServerTests: XCTestCase {
    static let server: TestServer = {
        var http = HTTPServerConfiguration()
        http.requestReadTimeoutNanos = 400_000_000
        http.idleTimeoutNanos = 600_000_000
        return try! TestServer(http: http)
    }()
    var port: Int { Self.server.port }

    /// Each corpus case over a real connection: the statuses in order, and a close where one is due.
    func testCorpusOverSockets() throws {
        for c in try Corpus.httpRequests() {
            let client = try BlockingClient(port: port, timeoutMs: 1500)
            try client.send(c.raw)
            if !c.closes { client.shutdownWrite() }  // lets a kept-alive connection end after its answers
            let (bytes, end) = client.readAll()
            let (responses, rest) = ResponseParser.parseAll(bytes)
            if c.status == 200 {
                XCTAssertEqual(responses.map(\.status), Array(repeating: 200, count: c.responses), "\(c.name)")
                if let body = c.body { XCTAssertEqual(responses.last.map { String(decoding: $0.body, as: UTF8.self) }, body, c.name) }
            } else {
                XCTAssertEqual(responses.map(\.status), [c.status], "\(c.name): \(String(decoding: bytes.prefix(200), as: UTF8.self))")
                XCTAssertEqual(responses.first?.header("connection")?.lowercased(), "close", c.name)
                XCTAssertTrue(responses.first?.body.count ?? 0 > 0, "\(c.name): error body")
            }
            XCTAssertTrue(rest.isEmpty, "\(c.name): stray bytes after the responses")
            if c.closes { XCTAssertEqual(end, .closed, "\(c.name): server must close") }
        }
    }

    /// Issue 15 item 11: one complete answer larger than the outbound cap (a worker's /metrics
    /// with thousands of upstreams) used to be dropped silently; it is sent whole, and the
    /// connection still serves the next request.
    func testACompleteAnswerLargerThanTheOutboundCapIsSent() throws {
        var http = HTTPServerConfiguration()
        http.maxOutboundBytes = 64 * 1024
        let body = [UInt8]((0..<(1 << 20)).map { UInt8(65 + $0 % 26) })
        let server = try TestServer(http: http, loops: 1) { router in
            router.get("/big") { _, r in r.send(status: 200, headers: HTTPHeaders([("Content-Type", "text/plain")]), body: body) }
        }
        let client = try BlockingClient(port: server.port, timeoutMs: 5000)
        try client.send("GET /big HTTP/1.1\r\nHost: a\r\n\r\nGET /healthz HTTP/1.1\r\nHost: a\r\nConnection: close\r\n\r\n")
        let (bytes, end) = client.readAll()
        XCTAssertEqual(end, .closed)
        let (rs, _) = ResponseParser.parseAll(bytes)
        XCTAssertEqual(rs.map(\.status), [200, 200])
        XCTAssertEqual(rs.first?.body.count, body.count, "the whole body")
        XCTAssertTrue(rs.first?.body == body, "the same bytes")
    }

    func testKeepAliveServesSequentialRequests() throws {
        let client = try BlockingClient(port: port)
        for i in 0..<5 {
            try client.send("POST /_conformance/echo-body HTTP/1.1\r\nHost: a\r\nContent-Length: 1\r\n\r\n\(i)")
            let (rs, _) = ResponseParser.parseAll(client.read(atLeast: 100))
            XCTAssertEqual(rs.first?.body, Array("\(i)".utf8))
        }
    }

    func testSSEStreamFraming() throws {
        let client = try BlockingClient(port: port)
        try client.send("GET /_conformance/sse?n=3 HTTP/1.1\r\nHost: a\r\nConnection: close\r\n\r\n")
        let (bytes, end) = client.readAll()
        XCTAssertEqual(end, .closed)
        let (rs, _) = ResponseParser.parseAll(bytes)
        XCTAssertEqual(rs.first?.header("content-type"), "text/event-stream")
        XCTAssertEqual(rs.first?.header("transfer-encoding"), "chunked")
        let text = String(decoding: rs.first?.body ?? [], as: UTF8.self)
        XCTAssertEqual(text, "event: tick\ndata: 0\n\nevent: tick\ndata: 1\n\nevent: tick\ndata: 2\n\ndata: [DONE]\n\n")
    }

    func testChunkedResponse() throws {
        let client = try BlockingClient(port: port)
        try client.send("GET /_conformance/chunked HTTP/1.1\r\nHost: a\r\n\r\n")
        let (rs, _) = ResponseParser.parseAll(client.read(atLeast: 150))
        XCTAssertEqual(rs.first.map { String(decoding: $0.body, as: UTF8.self) }, "hello world")
    }

    func testUnknownRouteAndMethod() throws {
        let client = try BlockingClient(port: port)
        try client.send("GET /nope HTTP/1.1\r\nHost: a\r\n\r\nDELETE /healthz HTTP/1.1\r\nHost: a\r\n\r\n")
        client.shutdownWrite()
        let (rs, _) = ResponseParser.parseAll(client.readAll().0)
        XCTAssertEqual(rs.map(\.status), [404, 405])
        XCTAssertEqual(rs.last?.header("allow"), "GET")
        XCTAssertTrue(String(decoding: rs[0].body, as: UTF8.self).contains("\"code\":\"not_found\""))
    }

    func testHeadRequestHasNoBody() throws {
        let client = try BlockingClient(port: port)
        try client.send("HEAD /healthz HTTP/1.1\r\nHost: a\r\nConnection: close\r\n\r\n")
        let (bytes, _) = client.readAll()
        let text = String(decoding: bytes, as: UTF8.self)
        XCTAssertTrue(text.hasPrefix("HTTP/1.1 200 OK\r\n"))
        XCTAssertTrue(text.contains("Content-Length: 15\r\n"))
        XCTAssertTrue(text.hasSuffix("\r\n\r\n"), "no body after a HEAD response")
    }

    func testExpectContinue() throws {
        let client = try BlockingClient(port: port)
        try client.send("POST /_conformance/echo-body HTTP/1.1\r\nHost: a\r\nContent-Length: 3\r\nExpect: 100-continue\r\n\r\n")
        let interim = String(decoding: client.read(atLeast: 25), as: UTF8.self)
        XCTAssertEqual(interim, "HTTP/1.1 100 Continue\r\n\r\n")
        try client.send("abc")
        let (rs, _) = ResponseParser.parseAll(client.read(atLeast: 100))
        XCTAssertEqual(rs.first?.body, Array("abc".utf8))
    }

    /// Slowloris: a head that never completes is answered 408 and closed at the read timeout.
    func testHeaderReadTimeout() throws {
        let client = try BlockingClient(port: port, timeoutMs: 3000)
        try client.send("GET /healthz HTTP/1.1\r\nHost: a\r\nX-Slow: ")
        let start = monotonicNanos()
        let (bytes, end) = client.readAll()
        let waited = Double(monotonicNanos() - start) / 1e9
        XCTAssertEqual(end, .closed)
        XCTAssertEqual(ResponseParser.parseAll(bytes).0.first?.status, 408)
        XCTAssertGreaterThan(waited, 0.2)
        XCTAssertLessThan(waited, 2.5)
    }

    /// Dripping bytes does not extend the request deadline.
    func testDripDoesNotExtendDeadline() throws {
        let client = try BlockingClient(port: port, timeoutMs: 3000)
        try client.send("GET /healthz HTTP/1.1\r\n")
        for _ in 0..<8 {
            usleep(100_000)
            _ = try? client.send("X: y\r\n")
        }
        let (bytes, end) = client.readAll()
        XCTAssertEqual(end, .closed)
        XCTAssertEqual(ResponseParser.parseAll(bytes).0.first?.status, 408)
    }

    /// A server whose idle timeout is far longer than its request timeout: the request deadline
    /// must count from the request's first byte, not wait for the idle deadline armed at accept.
    static let patientServer: TestServer = {
        var http = HTTPServerConfiguration()
        http.requestReadTimeoutNanos = 500_000_000
        http.idleTimeoutNanos = 30_000_000_000
        return try! TestServer(http: http)
    }()

    func testSlowHeadGets408AtRequestTimeoutNotIdleTimeout() throws {
        for pipelined in [false, true] {
            let client = try BlockingClient(port: Self.patientServer.port, timeoutMs: 10_000)
            if pipelined {
                // After a keep-alive answer the timer points at the idle deadline again.
                try client.send("GET /healthz HTTP/1.1\r\nHost: a\r\n\r\n")
                _ = client.read(atLeast: 40)
            }
            usleep(300_000)  // idle before the request starts
            let start = monotonicNanos()
            try client.send("GET /healthz HTTP/1.1\r\n")
            var closed = false
            for _ in 0..<60 where !closed {  // one header byte every 100 ms, for up to 6 s
                usleep(100_000)
                closed = (try? client.send("X")) == nil
            }
            let (bytes, _) = client.readAll()
            let waited = Double(monotonicNanos() - start) / 1e9
            let statuses = ResponseParser.parseAll(bytes).0.map(\.status)
            XCTAssertEqual(statuses.last, 408, "pipelined: \(pipelined)")
            XCTAssertGreaterThan(waited, 0.45, "measured from the first byte")
            XCTAssertLessThan(waited, 5, "the request timeout (0.5 s), not the idle timeout (30 s); pipelined: \(pipelined)")
        }
    }

    func testIdleKeepAliveTimeout() throws {
        let client = try BlockingClient(port: port, timeoutMs: 3000)
        try client.send("GET /healthz HTTP/1.1\r\nHost: a\r\n\r\n")
        let start = monotonicNanos()
        let (bytes, end) = client.readAll()
        let waited = Double(monotonicNanos() - start) / 1e9
        XCTAssertEqual(ResponseParser.parseAll(bytes).0.map(\.status), [200])
        XCTAssertEqual(end, .closed, "idle connection closed")
        XCTAssertGreaterThan(waited, 0.3)
        XCTAssertLessThan(waited, 2.5)
    }

    func testIdleWithoutAnyRequest() throws {
        let client = try BlockingClient(port: port, timeoutMs: 3000)
        let (bytes, end) = client.readAll()
        XCTAssertEqual(end, .closed)
        XCTAssertTrue(bytes.isEmpty, "a connection that never sent anything is closed silently")
    }

    /// Many connections at once, each pipelining requests: every answer arrives in order.
    func testManyConcurrentPipelinedClients() throws {
        var clients: [BlockingClient] = []
        for _ in 0..<50 { clients.append(try BlockingClient(port: port)) }
        for (i, c) in clients.enumerated() {
            var req = ""
            for k in 0..<4 { req += "POST /_conformance/echo-body HTTP/1.1\r\nHost: a\r\nContent-Length: \("\(i)-\(k)".utf8.count)\r\n\r\n\(i)-\(k)" }
            try c.send(req)
            c.shutdownWrite()
        }
        for (i, c) in clients.enumerated() {
            let (rs, _) = ResponseParser.parseAll(c.readAll().0)
            XCTAssertEqual(rs.map { String(decoding: $0.body, as: UTF8.self) }, (0..<4).map { "\(i)-\($0)" })
        }
    }
}
