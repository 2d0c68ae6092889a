import Conformance
import HTTP1
import NetCore
import Runtime
import WebSocket

/// A node's network stack in-process on port 0 with the conformance routes, for live tests.
public final class TestServer: @unchecked Sendable {
    public let group: EventLoopGroup
    public let router: Router
    public let port: Int
    public let server: HTTPServer

    public init(http: HTTPServerConfiguration = HTTPServerConfiguration(), webSocket: WebSocketConfiguration = WebSocketConfiguration(),
                loops: Int = 2, extraRoutes: (Router) -> Void = { _ in }) throws {
        ProcessLimits.ignoreSIGPIPE()
        group = try EventLoopGroup(count: loops, namePrefix: "test")
        router = Router()
        router.get("/healthz") { _, r in r.sendJSON("{\"status\":\"ok\"}") }
        ConformanceRoutes.install(on: router, webSocket: webSocket)
        extraRoutes(router)
        server = HTTPServer(router: router, configuration: http)
        port = try server.start(group: group, host: "127.0.0.1", port: 0).port
        group.start()
    }

    deinit { group.shutdown() }
}
