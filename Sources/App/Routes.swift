import Conformance
import HTTP1
import NetCore
import Runtime
import WebSocket

/// The node's routes. Product routes join here as their modules land.
enum Routes {
    static func install(on router: Router, config: NodeConfig) {
        router.get("/healthz") { _, r in r.sendJSON("{\"status\":\"ok\"}") }
        if config.conformanceEcho { ConformanceRoutes.install(on: router, webSocket: config.webSocket) }
    }
}
