import Domain
import HTTP1
import JSON
import NetCore

/// The browser's sign-in: trade an API key for an HttpOnly, SameSite=Strict session cookie.
public struct SessionRoutes {
    let store: IdentityDirectory
    let secure: Bool
    let authenticator: Authenticator
    let origins: OriginPolicy

    public init(store: IdentityDirectory, secure: Bool, authenticator: Authenticator, origins: OriginPolicy) {
        self.store = store
        self.secure = secure
        self.authenticator = authenticator
        self.origins = origins
    }

    /// Signing in and out change which account a browser acts as, so both are refused from a
    /// foreign page (login CSRF: a form on another site signing the victim in as the attacker;
    /// cross-site sign-out), whatever credential they carry. Browsers send Origin on every
    /// cross-origin POST and DELETE; a body must be JSON, which a plain form cannot send.
    func refusal(_ req: HTTPRequest) -> APIError? {
        if !origins.permits(origin: req.headers.first("origin"), host: req.headers.first("host"))
            || req.headers.first("sec-fetch-site")?.lowercased() == "cross-site" {
            return APIError(.forbidden, "cross-origin sign-in and sign-out are refused")
        }
        if !req.body.isEmpty && !SessionRoutes.isJSON(req.headers.first("content-type")) {
            return APIError(.unsupportedMediaType, "send the body as application/json")
        }
        return nil
    }

    static func isJSON(_ contentType: String?) -> Bool {
        guard let ct = contentType else { return false }
        let media = ct.split(separator: ";", maxSplits: 1).first.map { String($0).trimmingWhitespace().lowercased() } ?? ""
        return media == "application/json"
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

    func fail(_ r: HTTPResponder, _ e: APIError, headers: HTTPHeaders = HTTPHeaders()) { r.send(e, headers: headers) }

    public func install(on router: Router) {
        router.post("/v1/session", bodyLimit: 4096) { req, r in
            if let e = refusal(req) { return fail(r, e) }
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
                    h.add("Set-Cookie", cookie(token, maxAge: store.sessionLifetimeSeconds))
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
            if let e = refusal(req) { return fail(r, e) }
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
