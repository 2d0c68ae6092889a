import Domain
import FleetCore
import HTTP1
import JSON
import NetCore

/// A request as the API sees it, whichever transport carried it.
public struct APICall {
    public var method: String
    public var path: String
    public var pathParameters: [String: String] = [:]
    public var query: [String: String] = [:]
    /// The body: nil when there was none. A body that is not JSON is in `bodyError`.
    public var body: JSONValue?
    public var bodyError: JSONError?
    /// Set by the router once the credential checked out (anonymous for public routes).
    public var identity: Identity = .anonymous

    public init(method: String, path: String, body: JSONValue?, bodyError: JSONError? = nil) {
        self.method = method
        self.path = path
        self.body = body
        self.bodyError = bodyError
    }

    /// The body as an object, or the error to send.
    public func requireObject() throws(APIError) -> JSONObject {
        if let e = bodyError { throw APIError(.invalidRequest, "request body is not valid JSON: \(e)") }
        guard let o = body?.objectValue else { throw APIError(.invalidRequest, "request body must be a JSON object") }
        return o
    }

    static func splitTarget(_ target: Substring) -> (String, [String: String]) {
        guard let q = target.firstIndex(of: "?") else { return (String(target), [:]) }
        var params: [String: String] = [:]
        for pair in target[target.index(after: q)...].split(separator: "&") {
            let kv = pair.split(separator: "=", maxSplits: 1, omittingEmptySubsequences: false)
            params[PercentDecoding.decode(kv[0])] = kv.count > 1 ? PercentDecoding.decode(kv[1]) : ""
        }
        return (String(target[..<q]), params)
    }
}

/// How a handler answers. Implemented once per transport (HTTP, WebSocket envelope).
public protocol APIReply: AnyObject {
    var loop: EventLoop { get }
    /// False once the client is gone (the socket closed while a credential, a preset or an
    /// admission was being looked up): no work is started for it then.
    var isOpen: Bool { get }
    func respond(status: Int, json: [UInt8])
    func fail(_ error: APIError)
    /// A subscriber that writes a completion's events as this transport and route expect.
    func completionSubscriber(for request: CompletionRequest) -> CompletionSubscriber
    /// Whether this transport shows every token as it comes, whatever the body's `stream` says
    /// (the WebSocket envelope always does). The model proxy may hold an answer only when no one
    /// sees it before the end.
    var showsTokensLive: Bool { get }
    /// Remembers a running completion so it can be detached if the client goes away.
    func track(_ stream: CompletionStream, subscriber: CompletionSubscriber)
    /// The caller's request-rate standing, for transports that can show it (REST headers).
    func rateLimit(limit: Int, remaining: Int, resetMs: Int)
    /// The methods a path takes, for a 405 (the `Allow` header, for transports that have one).
    func allow(_ methods: [String])
}

extension APIReply {
    public func rateLimit(limit: Int, remaining: Int, resetMs: Int) {}
    public func allow(_ methods: [String]) {}
}

public typealias APIHandler = (APICall, APIReply) -> Void

/// The API's routes, shared by REST and the WebSocket envelope: one handler per route. Every
/// route needs an identity unless added as public; the router checks the credential first.
public final class APIRouter: @unchecked Sendable {
    public private(set) var table = RouteTable<APIHandler>()
    public let authenticator: Authenticator
    private var publicRoutes: Set<String> = []

    public init(authenticator: Authenticator) { self.authenticator = authenticator }

    public func add(_ method: String, _ pattern: String, bodyLimit: Int = 1 << 20, isPublic: Bool = false, _ handler: @escaping APIHandler) {
        table.add(method, pattern, bodyLimit: bodyLimit, handler)
        if isPublic { publicRoutes.insert(method + " " + pattern) }
    }

    /// Routes a call; unknown routes get 404/405 in the API's error shape; protected routes 401
    /// without a valid credential.
    public func dispatch(_ call: APICall, _ reply: APIReply, credential: Credential?) {
        let match = table.match(method: call.method, path: Substring(call.path))
        if case .found(let r, _) = match, !isPublic(r) {
            authenticator.authenticate(credential, on: reply.loop) { [self] result in route(call, reply, identity: result, match: match) }
        } else {
            route(call, reply, identity: .success(.anonymous), match: match)
        }
    }

    private func isPublic(_ r: RouteTable<APIHandler>.Route) -> Bool { publicRoutes.contains(r.method + " " + r.patternString) }

    /// Routes a call whose credential was already checked (the WebSocket checks each message in
    /// order, before routing, so replies keep the order of requests).
    public func route(_ call: APICall, _ reply: APIReply, identity: Result<Identity, APIError>) {
        route(call, reply, identity: identity, match: table.match(method: call.method, path: Substring(call.path)))
    }

    private func route(_ call: APICall, _ reply: APIReply, identity: Result<Identity, APIError>, match: RouteTable<APIHandler>.Match) {
        switch match {
        case .found(let route, let params):
            var c = call
            c.pathParameters = params
            if !isPublic(route) {
                switch identity {
                case .failure(let e): reply.fail(e); return
                case .success(let id): c.identity = id
                }
            }
            route.handler(c, reply)
        case .methodNotAllowed(let allowed):
            reply.allow(allowed)
            reply.fail(APIError(.methodNotAllowed, "\(call.method) is not allowed on \(call.path); allowed: \(allowed.joined(separator: ", "))"))
        case .notFound:
            reply.fail(APIError(.notFound, "no route for \(call.method) \(call.path)"))
        }
    }
}
