import Domain
import FleetCore
import HTTP1
import JSON
import NetCore
import Synchronization
import WebSocket

/// The open envelope sessions, so a draining node can say goodbye (close 1001) to each.
public final class SessionRegistry: @unchecked Sendable {
    private struct Weak: @unchecked Sendable { weak var session: EnvelopeSession? }
    private let sessions = Mutex<[ObjectIdentifier: Weak]>([:])
    /// How the identity directory names a session token in a revocation (a hash: the token
    /// itself is never stored).
    let tokenHash: @Sendable (String) -> String
    public init(tokenHash: @escaping @Sendable (String) -> String) { self.tokenHash = tokenHash }

    func add(_ s: EnvelopeSession) { sessions.withLock { $0[ObjectIdentifier(s)] = Weak(session: s) } }
    func remove(_ s: EnvelopeSession) { _ = sessions.withLock { $0.removeValue(forKey: ObjectIdentifier(s)) } }
    public var count: Int { sessions.withLock { $0.count } }

    /// A credential was revoked: every open socket it (or, for a key, any session made from it)
    /// authenticated is closed at once with 1008, which also stops the generations only it was
    /// listening to. `.recheckAll` checks every socket's credential again and closes the refused.
    public func apply(_ revocation: Revocation) {
        let open = sessions.withLock { Array($0.values) }.compactMap(\.session)
        for s in open {
            switch revocation {
            case .key(let id):
                guard s.identity.keyID == id else { continue }
            case .session(let hash):
                guard case .session(let token)? = s.credential, tokenHash(token) == hash else { continue }
            case .recheckAll:
                break
            }
            let box = UncheckedBox(s)
            s.ws.loop.execute {
                if revocation == .recheckAll { box.value.recheckCredential() } else { box.value.revoked() }
            }
        }
    }

    /// Sends close 1001 ("going away") on every open session, each on its own loop.
    public func closeAll(reason: String) {
        for w in sessions.withLock({ Array($0.values) }) {
            guard let s = w.session else { continue }
            let box = UncheckedBox(s)
            s.ws.loop.execute { box.value.ws.close(code: WSCloseCode.goingAway, reason: reason) }
        }
    }
}

/// `GET /v1/ws`: one WebSocket carries many requests. Each client message is an envelope
/// `{"id", "method", "path", "body"}` routed through the same API routes as REST; every reply
/// carries the envelope's id. A bad message gets an error reply and the socket stays open.
public enum WebSocketTransport {
    /// The upgrade itself is authenticated (API key or session cookie) and Origin-checked; each
    /// envelope is authenticated again, so a revoked key or ended session stops at once.
    public static func install(_ api: APIRouter, on router: Router, path: String = "/v1/ws",
                               configuration: WebSocketConfiguration, metrics: Metrics, registry: SessionRegistry) {
        router.get(path) { req, responder in
            let credential = HTTPCredentials.from(req.headers)
            api.authenticator.authenticate(credential, on: responder.loop) { result in
                switch result {
                case .failure(let e):
                    responder.send(e)
                case .success(let identity):
                    WebSocketServer.upgrade(req, responder, configuration: configuration) { ws in
                        metrics.wsConnections.add(1, ordering: .relaxed)
                        let session = EnvelopeSession(ws: ws, api: api, metrics: metrics, credential: credential, identity: identity)
                        session.registry = registry
                        registry.add(session)
                        return session
                    }
                }
            }
        }
    }
}

final class EnvelopeSession: WebSocketDelegate {
    // Strong: the session can outlive the socket (a job or a credential check may still hold it),
    // and must then find a closed socket, not a freed one. The cycle with `ws.delegate` is broken
    // when the socket closes.
    let ws: WebSocket
    let api: APIRouter
    let metrics: Metrics
    let credential: Credential?
    /// Who the upgrade authenticated (each envelope is checked again).
    let identity: Identity
    weak var registry: SessionRegistry?
    private var tracked: [(stream: CompletionStream, subscriber: EnvelopeSubscriber)] = []
    var writer = JSONWriter(capacity: 256)

    init(ws: WebSocket, api: APIRouter, metrics: Metrics, credential: Credential?, identity: Identity) {
        self.ws = ws
        self.api = api
        self.metrics = metrics
        self.credential = credential
        self.identity = identity
    }

    /// The credential behind this socket is no longer valid: say so and close (loop thread).
    func revoked() {
        guard ws.isOpen else { return }
        sendError(id: .null, APIError(.unauthorized, "the API key or session behind this connection was revoked"))
        ws.close(code: WSCloseCode.policyViolation, reason: "credential revoked")
    }

    /// Checks the credential again; closes the socket if it was refused (loop thread). An
    /// unavailable store leaves it open: the next envelope is checked anyway.
    func recheckCredential() {
        guard ws.isOpen else { return }
        api.authenticator.authenticate(credential, on: ws.loop) { [self] result in
            if case .failure(let e) = result, e.code == .unauthorized { revoked() }
        }
    }

    func webSocket(_ ws: WebSocket, received opcode: WSOpcode, _ data: UnsafeRawBufferPointer) {
        guard opcode == .text else {
            sendError(id: .null, APIError(.invalidRequest, "messages must be JSON text frames"))
            return
        }
        let envelope: Envelope
        switch Envelope.decode(Array(data)) {
        case .failure(let f):
            sendError(id: f.id, f.error)
            return
        case .success(let e): envelope = e
        }
        let (path, query) = APICall.splitTarget(envelope.target[...])
        var call = APICall(method: envelope.method, path: path, body: envelope.body)
        call.query = query
        let id = envelope.id
        // Requests queue here while the one before them is authenticated: bounded, so a client
        // cannot pile up megabytes of bodies while the account store is slow.
        guard waiting.count < EnvelopeSession.maxWaiting else {
            sendError(id: id, APIError(.serverBusy, "too many requests waiting on this connection", retryAfterMs: 100))
            return
        }
        waiting.append((call, EnvelopeReply(session: self, id: id)))
        if !checking { checkNext() }
    }

    /// Requests wait here while the one before them has its credential checked, so they reach the
    /// router (and take queue places and slots) in the order the client sent them.
    private var waiting: [(APICall, EnvelopeReply)] = []
    static let maxWaiting = 64
    private var checking = false

    private func checkNext() {
        guard !waiting.isEmpty, ws.isOpen else { checking = false; return }
        checking = true
        let (call, reply) = waiting.removeFirst()
        api.authenticator.authenticate(credential, on: ws.loop) { [self] result in
            // The socket may have closed while the credential was checked: nothing to start then.
            guard ws.isOpen else { waiting.removeAll(); checking = false; return }
            api.route(call, reply, identity: result)
            checkNext()
        }
    }

    func webSocketClosed(_ ws: WebSocket, code: UInt16?) {
        metrics.wsConnections.subtract(1, ordering: .relaxed)
        registry?.remove(self)
        let t = tracked
        tracked.removeAll()
        for (stream, sub) in t { stream.detach(sub) }
    }

    func track(_ stream: CompletionStream, _ s: EnvelopeSubscriber) { tracked.append((stream, s)) }

    func untrack(_ s: EnvelopeSubscriber) { tracked.removeAll { $0.subscriber === s } }

    func send(_ build: (inout JSONWriter) -> Void) {
        writer.reset()
        build(&writer)
        writer.bytes.withUnsafeBytes { ws.send(.text, $0) }
    }

    func sendError(id: JSONValue, _ e: APIError) {
        send { w in
            w.beginObject()
            w.key("id"); w.value(id)
            w.key("type"); w.string("error")
            w.key("status"); w.int(e.status)
            w.key("error"); e.writeBody(&w)
            w.endObject()
        }
    }
}

final class EnvelopeReply: APIReply {
    let session: EnvelopeSession
    let id: JSONValue
    var loop: EventLoop { session.ws.loop }
    var isOpen: Bool { session.ws.isOpen }

    init(session: EnvelopeSession, id: JSONValue) {
        self.session = session
        self.id = id
    }

    func respond(status: Int, json: [UInt8]) {
        session.send { w in
            w.beginObject()
            w.key("id"); w.value(id)
            w.key("type"); w.string("response")
            w.key("status"); w.int(status)
            w.key("body"); w.raw(json)
            w.endObject()
        }
    }

    func fail(_ error: APIError) {
        session.sendError(id: id, error)
        // The credential behind this socket stopped being valid (revoked key, ended session).
        if error.code == .unauthorized { session.ws.close(code: WSCloseCode.policyViolation, reason: "unauthorized") }
    }

    var showsTokensLive: Bool { true }

    func completionSubscriber(for request: CompletionRequest) -> CompletionSubscriber {
        EnvelopeSubscriber(session: session, id: id)
    }

    func track(_ stream: CompletionStream, subscriber: CompletionSubscriber) {
        guard let s = subscriber as? EnvelopeSubscriber, !s.ended else { return }
        session.track(stream, s)
    }
}

/// Writes a completion's events as envelope frames: accepted, one delta per token, done or error.
final class EnvelopeSubscriber: CompletionSubscriber {
    let session: EnvelopeSession
    let id: JSONValue
    var loop: EventLoop { session.ws.loop }
    private(set) var ended = false

    init(session: EnvelopeSession, id: JSONValue) {
        self.session = session
        self.id = id
    }

    func receive(_ event: CompletionEvent) {
        session.send { w in CompletionEncoding.envelope(event, id: id, &w) }
        switch event {
        case .done, .failed:
            ended = true
            session.untrack(self)
        default: break
        }
    }
}
