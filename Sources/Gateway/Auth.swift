import Domain
import HTTP1
import NetCore

/// Turns a credential into an identity, on the caller's loop.
public protocol Authenticator: AnyObject, Sendable {
    func authenticate(_ credential: Credential?, on loop: EventLoop, done: @escaping (Result<Identity, APIError>) -> Void)
}

/// API keys and sessions from the identity directory (PostgreSQL, through the node's identity cache).
public final class StoreAuthenticator: Authenticator, @unchecked Sendable {
    let store: IdentityDirectory
    public init(store: IdentityDirectory) { self.store = store }

    public func authenticate(_ credential: Credential?, on loop: EventLoop, done: @escaping (Result<Identity, APIError>) -> Void) {
        guard let credential else {
            done(.failure(APIError(.unauthorized, "sign in: send 'Authorization: Bearer <api key>' or a session cookie")))
            return
        }
        store.authenticate(credential, on: loop) { r in
            switch r {
            case .success(let id): done(.success(id))
            case .failure(.invalid): done(.failure(APIError(.unauthorized, "the API key or session is not valid (revoked, expired or unknown)")))
            case .failure(.unavailable): done(.failure(APIError(.serverBusy, "the account store is unavailable; retry shortly", retryAfterMs: 1000)))
            }
        }
    }
}

/// `--auth off`: everyone is the same local user. For benchmarks and experiments only.
public final class OpenAuthenticator: Authenticator {
    public init() {}
    public func authenticate(_ credential: Credential?, on loop: EventLoop, done: @escaping (Result<Identity, APIError>) -> Void) {
        done(.success(.anonymous))
    }
}

public enum HTTPCredentials {
    public static let sessionCookie = "pg_session"

    /// `Authorization: Bearer …` first, then the session cookie.
    public static func from(_ headers: HTTPHeaders) -> Credential? {
        if let auth = headers.first("authorization") {
            let parts = auth.split(separator: " ", maxSplits: 1)
            if parts.count == 2, parts[0].lowercased() == "bearer" { return .apiKey(String(parts[1]).trimmingWhitespace()) }
            return .apiKey("")  // a malformed Authorization header is a bad credential, not no credential
        }
        if let token = cookie(sessionCookie, in: headers) { return .session(token) }
        return nil
    }

    public static func cookie(_ name: String, in headers: HTTPHeaders) -> String? {
        for header in headers.all("cookie") {
            for pair in header.split(separator: ";") {
                let kv = pair.split(separator: "=", maxSplits: 1)
                if kv.count == 2, kv[0].trimmingWhitespace() == name { return kv[1].trimmingWhitespace() }
            }
        }
        return nil
    }
}

extension Substring {
    func trimmingWhitespace() -> String { String(self).trimmingWhitespace() }
}
