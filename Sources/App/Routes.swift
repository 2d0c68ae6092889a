import Conformance
import Domain
import FleetCore
import Gateway
import HTTP1
import JSON
import NetCore
import Storage
import Runtime
import WebSocket

/// The node's routes: the API over REST and the WebSocket envelope, sign-in, ops, the page.
enum Routes {
    static func install(on router: Router, config: NodeConfig, api: APIRouter, completions: CompletionService,
                        metrics: [Metrics], modelServer: Bool, identities: IdentityStore?, sessions: SessionRegistry,
                        redisUp: (@Sendable () -> Bool)? = nil, redisRefusesWrites: (@Sendable () -> Bool)? = nil,
                        hasCapacity: (@Sendable () -> Bool)? = nil, extraMetrics: (@Sendable () -> String)? = nil) throws {
        installOps(on: router, isDraining: { completions.isDraining }, metrics: metrics, redisUp: redisUp, redisRefusesWrites: redisRefusesWrites,
                   hasCapacity: hasCapacity, extraMetrics: extraMetrics)
        HTTPTransport.mount(api, on: router, origins: config.webSocket.origins,
                            sseKeepaliveNanos: UInt64(config.sseKeepaliveMs) * 1_000_000)
        if let identities { SessionRoutes(store: identities, secure: config.cookieSecure, authenticator: api.authenticator,
                                                     origins: config.webSocket.origins).install(on: router) }
        if !modelServer {
            WebSocketTransport.install(api, on: router, configuration: config.webSocket, metrics: metrics[0], registry: sessions)
            let files = try StaticFiles(directory: config.publicDir)
            router.fallback = { req, r in
                if !files.serve(req, r) {
                    r.send(APIError(.notFound, "no route for \(req.method) \(req.path)"))
                }
            }
        }
        if config.conformanceEcho { ConformanceRoutes.install(on: router, webSocket: config.webSocket) }
    }

    /// What every role serves: /healthz, /readyz (503 while draining; degraded while Redis is
    /// down) and /metrics (each set once).
    static func installOps(on router: Router, isDraining: @escaping @Sendable () -> Bool, metrics: [Metrics], redisUp: (@Sendable () -> Bool)?,
                           redisRefusesWrites: (@Sendable () -> Bool)? = nil, hasCapacity: (@Sendable () -> Bool)? = nil,
                           extraMetrics: (@Sendable () -> String)? = nil) {
        var sets: [Metrics] = []
        for m in metrics where !sets.contains(where: { $0 === m }) { sets.append(m) }
        let all = sets
        router.get("/healthz") { _, r in r.sendJSON("{\"status\":\"ok\"}") }
        router.get("/readyz") { _, r in
            if isDraining() {
                r.sendJSON(status: 503, "{\"status\":\"draining\"}")
            } else if let redisUp, !redisUp() {
                // Still up (what it does then is the README's Redis-down policy), but say so.
                r.sendJSON("{\"status\":\"degraded\",\"redis\":\"down\"}")
            } else if let hasCapacity, !hasCapacity() {
                // No worker in the fleet: completions are refused at once (server_busy) until one
                // beats again; the load balancer should prefer a gateway that has some.
                r.sendJSON(status: 503, "{\"status\":\"no capacity\",\"workers\":0}")
            } else if let redisRefusesWrites, redisRefusesWrites() {
                // Up, but refusing writes (maxmemory, a failed snapshot): admissions and queued
                // writes fail as they would with Redis down.
                r.sendJSON("{\"status\":\"degraded\",\"redis\":\"refusing writes\"}")
            } else {
                r.sendJSON("{\"status\":\"ready\"}")
            }
        }
        router.get("/metrics") { _, r in
            r.send(status: 200, contentType: "text/plain; version=0.0.4; charset=utf-8", body: all.map { $0.render() }.joined() + (extraMetrics?() ?? ""))
        }
    }
}
