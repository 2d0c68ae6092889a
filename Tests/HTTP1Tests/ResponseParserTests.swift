@testable import HTTP1
import XCTest

final class ResponseParserTests: XCTestCase {
    struct Out: Equatable { var status: Int?; var body = ""; var ended = false; var error = false }

    func run(_ text: String, split: Int = .max, eof: Bool = true) -> Out {
        var p = HTTPResponseParser(maxHeadBytes: 1024, maxHeaderCount: 20)
        var o = Out()
        let bytes = Array(text.utf8)
        var i = 0
        func on(_ e: HTTPResponseParser.Event) {
            switch e {
            case .head(let h): o.status = h.status
            case .body(let b): o.body += String(decoding: b, as: UTF8.self)
            case .end: o.ended = true
            }
        }
        while i < bytes.count && !o.error {
            let end = min(bytes.count, i + split)
            let chunk = Array(bytes[i..<end])
            i = end
            let ok: Bool = chunk.withUnsafeBytes { b in
                do throws(HTTPResponseError) { try p.feed(b, on); return true } catch { return false }
            }
            if !ok { o.error = true }
        }
        if eof && !o.error {
            do throws(HTTPResponseError) { try p.finish(on) } catch { o.error = true }
        }
        return o
    }

    func testFramings() {
        let cases: [(String, Out)] = [
            ("HTTP/1.1 200 OK\r\nContent-Length: 5\r\n\r\nhello", Out(status: 200, body: "hello", ended: true)),
            ("HTTP/1.1 200 OK\r\nTransfer-Encoding: chunked\r\n\r\n5;x=y\r\nhello\r\n6\r\n world\r\n0\r\nT: v\r\n\r\n", Out(status: 200, body: "hello world", ended: true)),
            ("HTTP/1.0 200 OK\r\n\r\nuntil close", Out(status: 200, body: "until close", ended: true)),
            ("HTTP/1.1 100 Continue\r\n\r\nHTTP/1.1 204 No Content\r\n\r\n", Out(status: 204, body: "", ended: true)),
            ("HTTP/1.1 200 OK\nContent-Length: 2\n\nok", Out(status: 200, body: "ok", ended: true)),
        ]
        for (text, want) in cases {
            for split in [1, 2, 3, 7, .max] { XCTAssertEqual(run(text, split: split), want, "\(text.debugDescription) split \(split)") }
        }
    }

    func testCutShortOrAmbiguousIsAnError() {
        for bad in ["HTTP/1.1 200 OK\r\nContent-Length: 5\r\n\r\nhel",                      // cut short
                    "HTTP/1.1 200 OK\r\nTransfer-Encoding: chunked\r\n\r\n5\r\nhel",       // cut short
                    "HTTP/1.1 200 OK\r\nContent-Length: 1\r\nContent-Length: 2\r\n\r\nab",  // conflicting lengths
                    "HTTP/1.1 200 OK\r\nContent-Length: 2\r\nTransfer-Encoding: chunked\r\n\r\n",
                    "HTTP/1.1 200 OK\r\nTransfer-Encoding: gzip\r\n\r\n",
                    "HTTP/1.1 200 OK\r\nTransfer-Encoding: chunked\r\n\r\nzz\r\n",
                    "HTTP/1.1 200 OK\r\nTransfer-Encoding: chunked\r\n\r\n2\r\nabc\r\n0\r\n\r\n",  // data longer than its size
                    "HTTP/2 200\r\n\r\n", "HTTP/1.1 2000 OK\r\n\r\n", "garbage\r\n\r\n",
                    "HTTP/1.1 200 OK\r\nBad Header\r\n\r\n", "HTTP/1.1 200 OK\r\nContent-Length: 1\r\n\r\nab",
                    "", "HTTP/1.1 200 OK\r\n" + String(repeating: "X-A: b\r\n", count: 300) + "\r\n"] {
            XCTAssertTrue(run(bad).error, bad.debugDescription)
        }
    }

    func testKeepAlive() {
        var p = HTTPResponseParser()
        var keep: [Bool] = []
        for text in ["HTTP/1.1 200 OK\r\nContent-Length: 0\r\n\r\n", "HTTP/1.1 200 OK\r\nConnection: close\r\nContent-Length: 0\r\n\r\n",
                     "HTTP/1.0 200 OK\r\nContent-Length: 0\r\n\r\n", "HTTP/1.0 200 OK\r\nConnection: keep-alive\r\nContent-Length: 0\r\n\r\n"] {
            p = HTTPResponseParser()
            Array(text.utf8).withUnsafeBytes { b in
                try? p.feed(b) { if case .head(let h) = $0 { keep.append(h.keepAlive) } }
            }
        }
        XCTAssertEqual(keep, [true, false, false, true])
    }

    func testServerSentEvents() {
        let stream = "\u{FEFF}: keepalive\r\ndata: {\"a\":1}\r\n\r\nevent: x\ndata: one\ndata: two\n\ndata:no-space\r\rid: 7\nretry: 5\n\ndata: [DONE]\n\n"
        for split in [1, 2, 5, 1000] {
            var p = SSEParser()
            var events: [SSEParser.Event] = []
            let bytes = Array(stream.utf8)
            var i = 0
            while i < bytes.count {
                let end = min(bytes.count, i + split)
                XCTAssertTrue(feed(&p, Array(bytes[i..<end])) { events.append($0) })
                i = end
            }
            XCTAssertEqual(events, [.comment, .message(event: nil, data: "{\"a\":1}"), .message(event: "x", data: "one\ntwo"),
                                    .message(event: nil, data: "no-space"), .message(event: nil, data: "[DONE]")], "split \(split)")
        }
        var small = SSEParser(maxEventBytes: 8)
        XCTAssertFalse(feed(&small, Array("data: 0123456789\n".utf8)) { _ in }, "bounded")
    }

    func feed(_ p: inout SSEParser, _ bytes: [UInt8], _ emit: (SSEParser.Event) -> Void) -> Bool {
        var parser = p
        let ok: Bool = bytes.withUnsafeBytes { b in
            do throws(HTTPResponseError) { try parser.feed(b, emit); return true } catch { return false }
        }
        p = parser
        return ok
    }
}
