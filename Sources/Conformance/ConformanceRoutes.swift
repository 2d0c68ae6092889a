import HTTP1
import NetCore
import WebSocket

/// Test-only routes: a WebSocket echo with raised size limits (Autobahn), a body echo, an SSE
/// stream and a chunked response (framing tests). Mounted only with `--conformance-echo`.
public enum ConformanceRoutes {
    public static func install(on router: Router, webSocket base: WebSocketConfiguration) {
        var ws = base
        ws.maxMessageBytes = 64 << 20
        ws.maxOutboundBytes = 80 << 20
        router.get("/_conformance/echo") { req, r in
            WebSocketServer.upgrade(req, r, configuration: ws) { _ in EchoDelegate() }
        }
        router.post("/_conformance/echo-body", bodyLimit: 64 * 1024) { req, r in
            var h = HTTPHeaders()
            h.add("X-Method", req.method)
            h.add("X-Target", req.head.target)
            r.send(status: 200, headers: h, body: req.body)
        }
        router.get("/_conformance/sse") { req, r in
            let n = min(Int(req.queryParameter("n") ?? "3") ?? 3, 10_000)
            let sse = SSEWriter(responder: r)
            for i in 0..<n { sse.send(event: "tick", data: "\(i)") }
            sse.send(data: "[DONE]")
            sse.end()
        }
        router.get("/_conformance/chunked") { _, r in
            var h = HTTPHeaders()
            h.add("Content-Type", "text/plain")
            r.startStream(headers: h)
            r.writeChunk("hello ")
            r.writeChunk("world")
            r.end()
        }
    }
}

/// Sends every message back as it came.
public final class EchoDelegate: WebSocketDelegate {
    public init() {}
    public func webSocket(_ ws: WebSocket, received opcode: WSOpcode, _ data: UnsafeRawBufferPointer) {
        ws.send(opcode, data)
    }
    public func webSocketClosed(_ ws: WebSocket, code: UInt16?) {}
}
