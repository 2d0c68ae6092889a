import Domain
import HTTP1
import JSON
import NetCore
import PresetStore
import WebSocket

/// The browser's sign-in: trade an API key for an HttpOnly, SameSite=Strict session cookie.
public struct SessionRoutes {
    let store: IdentityStore
    let secure: Bool
    let authenticator: Authenticator

    public init(store: IdentityStore, secure: Bool, authenticator: Authenticator) {
        self.store = store
        self.secure = secure
        self.authenticator = authenticator
    }

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

    public func install(on router: Router) {
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
