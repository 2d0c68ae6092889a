import HTTP1
import NetCore
import Runtime

public enum WebSocketServer {
    /// Answers an upgrade request: 101 and a live `WebSocket`, or an HTTP error (403 foreign
    /// Origin, 426 wrong version or not an upgrade, 400 bad key). `makeDelegate` runs once the
    /// socket exists, on its loop.
    public static func upgrade(_ request: HTTPRequest, _ responder: HTTPResponder, configuration: WebSocketConfiguration,
                               makeDelegate: (WebSocket) -> WebSocketDelegate?) {
        switch WebSocketHandshake.validate(request.head, origins: configuration.origins) {
        case .failure(let e):
            var h = HTTPHeaders()
            if e.status == 426 { h.add("Sec-WebSocket-Version", "13"); h.add("Upgrade", "websocket") }
            responder.sendError(status: e.status, code: e.status == 403 ? "forbidden" : "invalid_request", message: e.message, headers: h)
        case .success(let accept):
            let placeholder = PendingUpgrade()
            guard let (connection, leftover) = responder.upgrade(responseHead: WebSocketHandshake.responseHead(accept: accept), to: placeholder) else { return }
            let ws = WebSocket(connection: connection, role: .server, configuration: configuration)
            ws.delegate = makeDelegate(ws)
            ws.start(leftover: leftover)
        }
    }
}

/// Holds the connection's handler slot for the instant between the 101 and the socket's start.
final class PendingUpgrade: ConnectionHandler {
    func connectionRead(_ c: Connection, _ bytes: UnsafeMutableRawBufferPointer) {}
    func connectionClosed(_ c: Connection, error: SystemError?) {}
}

public struct WebSocketClientError: Error, CustomStringConvertible, Sendable {
    public let message: String
    public var description: String { message }
}

/// The client side of the handshake, used by the load generator and the tests.
public final class WebSocketClient: ConnectionHandler {
    private let path: String
    private let host: String
    private let key: String
    private let extraHeaders: HTTPHeaders
    private let configuration: WebSocketConfiguration
    private var response = ByteBuffer()
    private var done: ((Result<WebSocket, WebSocketClientError>) -> Void)?

    private init(path: String, host: String, extraHeaders: HTTPHeaders, configuration: WebSocketConfiguration, seed: UInt64,
                 done: @escaping (Result<WebSocket, WebSocketClientError>) -> Void) {
        self.path = path
        self.host = host
        self.extraHeaders = extraHeaders
        self.configuration = configuration
        var x = seed | 1
        var k: [UInt8] = []
        for _ in 0..<16 { x ^= x << 13; x ^= x >> 7; x ^= x << 17; k.append(UInt8(truncatingIfNeeded: x)) }
        key = Base64.encode(k)
        self.done = done
    }

    /// Connects, sends the upgrade request and calls `done` on `loop` with the open socket.
    public static func connect(to address: SocketAddress, from source: SocketAddress? = nil, path: String = "/",
                               headers: HTTPHeaders = HTTPHeaders(), configuration: WebSocketConfiguration = WebSocketConfiguration(),
                               loop: EventLoop, done: @escaping (Result<WebSocket, WebSocketClientError>) -> Void) {
        let client = WebSocketClient(path: path, host: address.description, extraHeaders: headers, configuration: configuration,
                                     seed: monotonicNanos(), done: done)
        do {
            _ = try Connection.connect(to: address, from: source, loop: loop) { conn, err in
                if let err {
                    client.finish(.failure(WebSocketClientError(message: "\(err)")))
                    return
                }
                conn.handler = client
                conn.write(client.requestBytes())
            }
        } catch {
            client.finish(.failure(WebSocketClientError(message: "\(error)")))
        }
    }

    func requestBytes() -> [UInt8] {
        var s = "GET \(path) HTTP/1.1\r\nHost: \(host)\r\nUpgrade: websocket\r\nConnection: Upgrade\r\n"
        s += "Sec-WebSocket-Key: \(key)\r\nSec-WebSocket-Version: 13\r\n"
        for (n, v) in extraHeaders.fields { s += "\(n): \(v)\r\n" }
        s += "\r\n"
        return Array(s.utf8)
    }

    private func finish(_ r: Result<WebSocket, WebSocketClientError>) {
        let d = done
        done = nil
        d?(r)
    }

    public func connectionRead(_ c: Connection, _ bytes: UnsafeMutableRawBufferPointer) {
        response.append(UnsafeRawBufferPointer(bytes))
        let all = response.readableArray()
        guard let end = HeadScanner.endOfHead(all) else {
            if all.count > 16 * 1024 {
                finish(.failure(WebSocketClientError(message: "handshake response too large")))
                c.close(afterFlush: false)
            }
            return
        }
        let head = String(decoding: all[0..<end], as: UTF8.self)
        let lines = head.split(separator: "\r\n")
        guard let status = lines.first, status.hasPrefix("HTTP/1.1 101") else {
            finish(.failure(WebSocketClientError(message: "handshake refused: \(lines.first ?? "")")))
            c.close(afterFlush: false)
            return
        }
        let expected = WebSocketHandshake.acceptValue(for: key)
        let acceptOK = lines.contains { l in
            let parts = l.split(separator: ":", maxSplits: 1)
            return parts.count == 2 && parts[0].lowercased() == "sec-websocket-accept" && parts[1].trimmingCharacters() == expected
        }
        guard acceptOK else {
            finish(.failure(WebSocketClientError(message: "bad Sec-WebSocket-Accept")))
            c.close(afterFlush: false)
            return
        }
        let ws = WebSocket(connection: c, role: .client, configuration: configuration)
        finish(.success(ws))
        ws.start(leftover: Array(all[(end + 4)...]))
    }

    public func connectionClosed(_ c: Connection, error: SystemError?) {
        finish(.failure(WebSocketClientError(message: "connection closed during handshake: \(error.map { "\($0)" } ?? "EOF")")))
    }
}

enum HeadScanner {
    /// Index of the CRLFCRLF that ends a head.
    static func endOfHead(_ b: [UInt8]) -> Int? {
        guard b.count >= 4 else { return nil }
        for i in 0...(b.count - 4) where b[i] == 13 && b[i + 1] == 10 && b[i + 2] == 13 && b[i + 3] == 10 { return i }
        return nil
    }
}

extension Substring {
    func trimmingCharacters() -> String {
        var s = self
        while s.first == " " || s.first == "\t" { s = s.dropFirst() }
        while s.last == " " || s.last == "\t" { s = s.dropLast() }
        return String(s)
    }
}
