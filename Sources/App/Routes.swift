import Conformance
import Domain
import Gateway
import HTTP1
import JSON
import NetCore
import PresetStore
import Runtime
import WebSocket

/// The node's routes: the API over REST and the WebSocket envelope, sign-in, ops, the page.
enum Routes {
    static func install(on router: Router, config: NodeConfig, api: APIRouter, scheduler: CompletionScheduler,
                        metrics: Metrics, modelServer: Bool, identities: IdentityStore?, sessions: SessionRegistry) {
        router.get("/healthz") { _, r in r.sendJSON("{\"status\":\"ok\"}") }
        router.get("/readyz") { _, r in
            if scheduler.isDraining {
                r.sendJSON(status: 503, "{\"status\":\"draining\"}")
            } else {
                r.sendJSON("{\"status\":\"ready\"}")
            }
        }
        router.get("/metrics") { _, r in
            r.send(status: 200, contentType: "text/plain; version=0.0.4; charset=utf-8", body: metrics.render())
        }
        HTTPTransport.mount(api, on: router, origins: config.webSocket.origins,
                            sseKeepaliveNanos: UInt64(config.sseKeepaliveMs) * 1_000_000)
        if let identities { SessionRoutes(store: identities, secure: config.cookieSecure, authenticator: api.authenticator).install(on: router) }
        if !modelServer {
            WebSocketTransport.install(api, on: router, configuration: config.webSocket, metrics: metrics, registry: sessions)
            let files = StaticFiles(directory: config.publicDir)
            router.fallback = { req, r in
                if !files.serve(req, r) {
                    r.sendError(status: 404, code: "not_found", message: "no route for \(req.method) \(req.path)")
                }
            }
        }
        if config.conformanceEcho { ConformanceRoutes.install(on: router, webSocket: config.webSocket) }
    }
}

/// The browser's sign-in: trade an API key for an HttpOnly, SameSite=Strict session cookie.
struct SessionRoutes {
    let store: IdentityStore
    let secure: Bool
    let authenticator: Authenticator

    func cookie(_ value: String, maxAge: Int) -> String {
        "\(HTTPCredentials.sessionCookie)=\(value); Path=/; Max-Age=\(maxAge); HttpOnly; SameSite=Strict" + (secure ? "; Secure" : "")
    }

    static func identityJSON(_ id: Identity) -> String {
        var w = JSONWriter()
        w.beginObject()
        w.key("user_id"); w.string(id.userID)
        w.key("org_id"); if let o = id.orgID { w.string(o) } else { w.null() }
        w.endObject()
        return w.string
    }

    func fail(_ r: HTTPResponder, _ e: APIError, headers: HTTPHeaders = HTTPHeaders()) {
        var h = headers
        h.add("Content-Type", "application/json")
        r.send(status: e.status, headers: h, body: e.jsonBytes)
    }

    func install(on router: Router) {
        router.post("/v1/session", bodyLimit: 4096) { req, r in
            var key: String?
            if case .apiKey(let k)? = HTTPCredentials.from(req.headers) { key = k }
            if key == nil, !req.body.isEmpty {
                key = (try? JSONParser.parse(req.body))?["api_key"]?.stringValue
            }
            guard let key, !key.isEmpty else {
                fail(r, .invalid("api_key", "send {\"api_key\": \"…\"} or an Authorization: Bearer header"))
                return
            }
            store.createSession(key: key, on: r.loop) { result in
                switch result {
                case .success((let token, let id)):
                    var h = HTTPHeaders()
                    h.add("Set-Cookie", cookie(token, maxAge: IdentityStore.sessionLifetimeSeconds))
                    h.add("Cache-Control", "no-store")
                    r.send(status: 200, contentType: "application/json", body: SessionRoutes.identityJSON(id), headers: h)
                case .failure(.invalid): fail(r, APIError(.unauthorized, "that API key is not valid"))
                case .failure(.unavailable): fail(r, APIError(.serverBusy, "the account store is unavailable; retry shortly", retryAfterMs: 1000))
                }
            }
        }
        router.get("/v1/session") { req, r in
            authenticator.authenticate(HTTPCredentials.from(req.headers), on: r.loop) { result in
                switch result {
                case .success(let id): r.sendJSON(SessionRoutes.identityJSON(id))
                case .failure(let e): fail(r, e)
                }
            }
        }
        router.add("DELETE", "/v1/session") { req, r in
            var h = HTTPHeaders()
            h.add("Set-Cookie", cookie("", maxAge: 0))
            guard let token = HTTPCredentials.cookie(HTTPCredentials.sessionCookie, in: req.headers) else {
                r.sendJSON("{\"signed_out\":true}", headers: h)
                return
            }
            store.deleteSession(token: token, on: r.loop) { _ in r.sendJSON("{\"signed_out\":true}", headers: h) }
        }
    }
}
