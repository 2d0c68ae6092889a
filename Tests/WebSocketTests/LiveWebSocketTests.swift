import HTTP1
import Runtime
import NetCore
import Synchronization
import TestSupport
import WebSocket
import XCTest
import Foundation
#if canImport(Glibc)
import Glibc
#endif

/// Counts server-side socket ends, from any loop.
final class CloseCounter: Sendable {
    let closed = Atomic<Int>(0)
}

/// On "flood", sends 1 KiB frames as fast as it can without waiting for the reader.
final class FloodDelegate: WebSocketDelegate {
    let counter: CloseCounter
    init(_ c: CloseCounter) { counter = c }
    func webSocket(_ ws: WebSocket, received opcode: WSOpcode, _ data: UnsafeRawBufferPointer) {
        let chunk = [UInt8](repeating: 120, count: 1024)
        for _ in 0..<100_000 where ws.isOpen { ws.send(.binary, chunk) }
    }
    func webSocketClosed(_ ws: WebSocket, code: UInt16?) { counter.closed.add(1, ordering: .relaxed) }
}

final class LiveWebSocketTests: XCTestCase {
    static let floodClosed = CloseCounter()
    static let server: TestServer = {
        var small = WebSocketConfiguration()
        small.maxMessageBytes = 1024
        small.maxOutboundBytes = 64 * 1024
        small.pingIntervalNanos = 300_000_000
        small.pongTimeoutNanos = 300_000_000
        small.origins = OriginPolicy(allowed: ["https://allowed.example"])
        return try! TestServer { router in
            router.get("/ws-small") { req, r in
                WebSocketServer.upgrade(req, r, configuration: small) { _ in EchoDelegateForTests() }
            }
            var patient = WebSocketConfiguration()
            patient.messageTimeoutNanos = 500_000_000
            router.get("/ws-drip") { req, r in
                WebSocketServer.upgrade(req, r, configuration: patient) { _ in EchoDelegateForTests() }
            }
            router.get("/ws-flood") { req, r in
                WebSocketServer.upgrade(req, r, configuration: small) { _ in FloodDelegate(LiveWebSocketTests.floodClosed) }
            }
        }
    }()
    var port: Int { Self.server.port }

    func testHandshakeAndEcho() throws {
        let c = try WSTestClient(port: port)
        XCTAssertEqual(c.handshakeStatus, 101)
        XCTAssertTrue(c.handshakeResponse.contains("Sec-WebSocket-Accept: s3pPLMBiTxaQ9kYGzzhZRbK+xOo="))
        try c.sendText("héllo")
        let f = c.readFrame()
        XCTAssertEqual(f?.opcode, 1)
        XCTAssertEqual(f.map { String(decoding: $0.payload, as: UTF8.self) }, "héllo")
        try c.sendFrame(2, [UInt8](repeating: 7, count: 70000))
        XCTAssertEqual(c.readFrame()?.payload.count, 70000)
    }

    func testUnmaskedFrameClosesWith1002() throws {
        let c = try WSTestClient(port: port)
        try c.sendFrame(1, Array("x".utf8), masked: false)
        XCTAssertEqual(c.readCloseCode(), 1002)
        XCTAssertTrue(c.serverClosedTCP())
    }

    func testReservedBitsAndUnknownOpcode() throws {
        var c = try WSTestClient(port: port)
        try c.sendFrame(1, Array("x".utf8), rsv: 4)
        XCTAssertEqual(c.readCloseCode(), 1002)
        c = try WSTestClient(port: port)
        try c.sendFrame(5, [])
        XCTAssertEqual(c.readCloseCode(), 1002)
    }

    func testInvalidUTF8Closes1007() throws {
        let c = try WSTestClient(port: port)
        try c.sendFrame(1, [0x61, 0xFF, 0x62])
        XCTAssertEqual(c.readCloseCode(), 1007)
    }

    func testCloseHandshake() throws {
        let c = try WSTestClient(port: port)
        try c.sendClose(1000, reason: "done")
        XCTAssertEqual(c.readCloseCode(), 1000)
        XCTAssertTrue(c.serverClosedTCP())
    }

    func testForeignOriginRefused() throws {
        let c = try WSTestClient(port: port, path: "/ws-small", headers: ["Origin": "https://evil.example"])
        XCTAssertEqual(c.handshakeStatus, 403)
        let ok = try WSTestClient(port: port, path: "/ws-small", headers: ["Origin": "https://allowed.example"])
        XCTAssertEqual(ok.handshakeStatus, 101)
        let same = try WSTestClient(port: port, path: "/ws-small", headers: ["Origin": "http://127.0.0.1:\(port)"])
        XCTAssertEqual(same.handshakeStatus, 101)
    }

    func testBadHandshakes() throws {
        XCTAssertEqual(try WSTestClient(port: port, version: "8").handshakeStatus, 426)
        XCTAssertEqual(try WSTestClient(port: port, key: "short").handshakeStatus, 400)
        let plain = try BlockingClient(port: port)
        try plain.send("GET /_conformance/echo HTTP/1.1\r\nHost: a\r\nConnection: close\r\n\r\n")
        XCTAssertEqual(ResponseParser.parseAll(plain.readAll().0).0.first?.status, 426)
    }

    func testOversizeMessageClosed1009WithoutPayload() throws {
        let c = try WSTestClient(port: port, path: "/ws-small")
        // Declare 2000 bytes but send none: the server must refuse from the header alone.
        try c.sendFrame(2, [], declaredLength: 2000)
        XCTAssertEqual(c.readCloseCode(), 1009)
        let ok = try WSTestClient(port: port, path: "/ws-small")
        try ok.sendFrame(2, [UInt8](repeating: 1, count: 1024))
        XCTAssertEqual(ok.readFrame()?.payload.count, 1024, "exactly the limit is fine")
    }

    func testSlowReaderIsDisconnected() throws {
        let before = Self.floodClosed.closed.load(ordering: .relaxed)
        let c = try WSTestClient(port: port, path: "/ws-flood", timeoutMs: 5000)
        try c.sendText("go")
        // Do not read. The server queues at most 64 KiB beyond what the kernel holds, then drops us.
        var waited = 0
        while Self.floodClosed.closed.load(ordering: .relaxed) == before && waited < 5000 {
            usleep(20_000)
            waited += 20
        }
        XCTAssertGreaterThan(Self.floodClosed.closed.load(ordering: .relaxed), before, "slow reader not disconnected")
        XCTAssertTrue(c.serverClosedTCP())
    }

    func testPingTimeoutDropsSilentPeer() throws {
        let c = try WSTestClient(port: port, path: "/ws-small", timeoutMs: 3000)
        // Our test client never answers pings: expect a ping, then the connection ends.
        let f = c.readFrame()
        XCTAssertEqual(f?.opcode, 9, "server pings after the interval")
        let start = monotonicNanos()
        XCTAssertTrue(c.serverClosedTCP())
        XCTAssertLessThan(Double(monotonicNanos() - start) / 1e9, 2.0)
    }

    /// A message dripped in fragments (or a frame dripped byte by byte) must complete within the
    /// message timeout, measured from its first byte; complete messages reset it.
    func testDrippedMessageIsClosed1008AtTheMessageTimeout() throws {
        for byteWise in [false, true] {
            let c = try WSTestClient(port: port, path: "/ws-drip", timeoutMs: 5000)
            try c.sendText("whole")
            XCTAssertEqual(c.readFrame().map { String(decoding: $0.payload, as: UTF8.self) }, "whole")
            usleep(700_000)  // idle time between messages does not count
            let start = monotonicNanos()
            let client = UncheckedBox(c)  // the dripper only writes; this thread only reads
            let dripper = Thread {
                let c = client.value
                if byteWise {
                    // One 100-byte frame, header first, then a byte at a time.
                    let frame = WSTestClient.encode(1, [UInt8](repeating: 97, count: 100))
                    for b in frame.prefix(90) {
                        guard (try? c.sendRaw([b])) != nil else { break }
                        usleep(50_000)
                    }
                } else {
                    _ = try? c.sendFrame(1, Array("a".utf8), fin: false)
                    for _ in 0..<30 {
                        usleep(100_000)
                        guard (try? c.sendFrame(0, Array("b".utf8), fin: false)) != nil else { break }
                    }
                }
            }
            dripper.start()
            XCTAssertEqual(c.readCloseCode(), 1008, "byteWise: \(byteWise)")
            let waited = Double(monotonicNanos() - start) / 1e9
            XCTAssertGreaterThan(waited, 0.45)
            XCTAssertLessThan(waited, 2.5, "byteWise: \(byteWise)")
        }
    }

    func testPongKeepsConnectionAlive() throws {
        let c = try WSTestClient(port: port, path: "/ws-small", timeoutMs: 3000)
        for _ in 0..<4 {
            guard let f = c.readFrame() else { return XCTFail("connection dropped though we answered") }
            XCTAssertEqual(f.opcode, 9)
            try c.sendFrame(10, f.payload)
        }
        try c.sendText("still here")
        XCTAssertEqual(c.readFrame().map { String(decoding: $0.payload, as: UTF8.self) }, "still here")
    }

    /// The loop-built client (used by the benchmark) against the server.
    func testLoopClientRoundTrip() throws {
        let loop = Self.server.group.loops[0]
        let done = expectation(description: "echo")
        let address = try SocketAddress(host: "127.0.0.1", port: port)
        let collector = Collector(done)
        loop.execute {
            WebSocketClient.connect(to: address, path: "/_conformance/echo", loop: loop) { result in
                switch result {
                case .failure(let e): XCTFail("\(e)"); done.fulfill()
                case .success(let ws):
                    ws.delegate = collector
                    ws.send(text: "ping-pong")
                }
            }
        }
        wait(for: [done], timeout: 5)
        XCTAssertEqual(collector.received, "ping-pong")
    }
}

final class Collector: WebSocketDelegate, @unchecked Sendable {
    let done: XCTestExpectation
    var received: String?
    init(_ d: XCTestExpectation) { done = d }
    func webSocket(_ ws: WebSocket, received opcode: WSOpcode, _ data: UnsafeRawBufferPointer) {
        received = String(decoding: data, as: UTF8.self)
        ws.close()
        done.fulfill()
    }
    func webSocketClosed(_ ws: WebSocket, code: UInt16?) {}
}

final class EchoDelegateForTests: WebSocketDelegate {
    func webSocket(_ ws: WebSocket, received opcode: WSOpcode, _ data: UnsafeRawBufferPointer) { ws.send(opcode, data) }
    func webSocketClosed(_ ws: WebSocket, code: UInt16?) {}
}
