import Domain
import FleetCore
import Gateway
import HTTP1
import JSON
import Models
import NetCore
import Runtime
import Synchronization
import WebSocket
import Worker

/// The preset port in memory (one process, no PostgreSQL): scoped by user, names unique per user
/// ignoring case, searched by the same rules as the database (`PresetSearch`). `down` makes every
/// call answer `unavailable`, as a database outage does.
public final class MemoryPresetStorage: PresetStorage, @unchecked Sendable {
    private let presets = Mutex<[String: Preset]>([:])
    /// Every version of each preset, as the database's trigger keeps them (oldest first).
    private let history = Mutex<[String: [Preset]]>([:])
    public let down = Atomic<Bool>(false)
    public init() {}

    public var isDown: Bool { down.load(ordering: .relaxed) }
    public var count: Int { presets.withLock { $0.count } }

    private func answer<T>(_ queue: CallbackQueue, _ done: @escaping (Result<T, StoreFailure>) -> Void, _ body: @escaping () -> T) {
        let d = UncheckedBox(done), b = UncheckedBox(body)
        let down = isDown
        queue.execute { d.value(down ? .failure(.unavailable) : .success(b.value())) }
    }

    private static func now() -> String { Timestamps.format(micros: Int64(wallClockNanos() / 1000)) }

    public func get(user: Identity, id: String, on queue: CallbackQueue, done: @escaping (Result<Preset?, StoreFailure>) -> Void) {
        answer(queue, done) { self.presets.withLock { $0[id] }.flatMap { $0.userID == user.userID ? $0 : nil } }
    }

    public func search(user: Identity, query: String, limit: Int, cursor: String?, on queue: CallbackQueue,
                       done: @escaping (Result<PresetPage?, StoreFailure>) -> Void) {
        answer(queue, done) {
            let mine = self.presets.withLock { $0.values.filter { $0.userID == user.userID } }
            return PresetSearch.page(mine, query: query, limit: limit, cursor: cursor).map { PresetPage(items: $0.items, nextCursor: $0.nextCursor) }
        }
    }

    public func create(user: Identity, fields: PresetFields, id: String, on queue: CallbackQueue,
                       done: @escaping (Result<Result<Preset, PresetWriteRefusal>, StoreFailure>) -> Void) {
        answer(queue, done) {
            let now = Self.now()
            let p = Preset.made(id: id, userID: user.userID, fields: fields, at: now)
            return self.presets.withLock { all in
                if all.values.contains(where: { $0.userID == user.userID && $0.name.lowercased() == p.name.lowercased() }) { return .failure(.conflict) }
                all[id] = p
                self.history.withLock { $0[id, default: []].append(p) }
                return .success(p)
            }
        }
    }

    public func update(user: Identity, id: String, fields: PresetFields, on queue: CallbackQueue,
                       done: @escaping (Result<Result<Preset, PresetWriteRefusal>, StoreFailure>) -> Void) {
        answer(queue, done) {
            self.presets.withLock { all in
                guard let old = all[id], old.userID == user.userID else { return .failure(.notFound) }
                var p = old.applying(fields)
                if all.values.contains(where: { $0.id != id && $0.userID == user.userID && $0.name.lowercased() == p.name.lowercased() }) {
                    return .failure(.conflict)
                }
                p.version += 1
                p.updatedAt = Self.now()
                all[id] = p
                self.history.withLock { $0[id, default: []].append(p) }
                return .success(p)
            }
        }
    }

    public func versions(user: Identity, id: String, limit: Int, before: Int?, on queue: CallbackQueue,
                         done: @escaping (Result<[Preset]?, StoreFailure>) -> Void) {
        answer(queue, done) {
            guard self.presets.withLock({ $0[id]?.userID == user.userID }) else { return nil }
            let all = self.history.withLock { $0[id] ?? [] }
            return Array(all.reversed().filter { before == nil || $0.version < before! }.prefix(limit))
        }
    }

    public func version(user: Identity, id: String, number: Int, on queue: CallbackQueue, done: @escaping (Result<Preset?, StoreFailure>) -> Void) {
        answer(queue, done) {
            guard self.presets.withLock({ $0[id]?.userID == user.userID }) else { return nil }
            return self.history.withLock { $0[id]?.first { $0.version == number } }
        }
    }

    public func delete(user: Identity, id: String, on queue: CallbackQueue, done: @escaping (Result<Bool, StoreFailure>) -> Void) {
        answer(queue, done) {
            self.presets.withLock { all in
                guard all[id]?.userID == user.userID else { return false }
                all[id] = nil
                self.history.withLock { $0[id] = nil }
                return true
            }
        }
    }

    public func failedWrites(user: Identity, on queue: CallbackQueue, done: @escaping (Result<[FailedPresetWrite], StoreFailure>) -> Void) {
        answer(queue, done) { [] }
    }

    public func dismissFailedWrite(user: Identity, key: String, on queue: CallbackQueue, done: @escaping (Result<Bool, StoreFailure>) -> Void) {
        answer(queue, done) { false }
    }
}

/// The identity port in memory: API keys the test names, sessions made from them.
public final class MemoryIdentityDirectory: IdentityDirectory, @unchecked Sendable {
    private let keys = Mutex<[String: Identity]>([:])
    private let sessions = Mutex<[String: Identity]>([:])
    public init(keys: [String: Identity]) { self.keys.withLock { $0 = keys } }

    public func revoke(key: String) { keys.withLock { $0[key] = nil } }

    public func authenticate(_ credential: Credential, on queue: CallbackQueue, done: @escaping (Result<Identity, IdentityFailure>) -> Void) {
        let found: Identity?
        switch credential {
        case .apiKey(let k): found = keys.withLock { $0[k] }
        case .session(let t): found = sessions.withLock { $0[t] }
        }
        let d = UncheckedBox(done)
        queue.execute { d.value(found.map { .success($0) } ?? .failure(.invalid)) }
    }

    public func createSession(key: String, on queue: CallbackQueue, done: @escaping (Result<(String, Identity), IdentityFailure>) -> Void) {
        let token = "s-" + UUIDText.random()
        let found = keys.withLock { $0[key] }
        if let found { sessions.withLock { $0[token] = found } }
        let d = UncheckedBox(done)
        queue.execute { d.value(found.map { .success((token, $0)) } ?? .failure(.invalid)) }
    }

    public func deleteSession(token: String, on queue: CallbackQueue, done: @escaping (Bool) -> Void) {
        sessions.withLock { $0[token] = nil }
        let d = UncheckedBox(done)
        queue.execute { d.value(true) }
    }

    public var sessionLifetimeSeconds: Int { 3600 }
}

/// A node on port 0 with the real API, wired as `serve` without Redis wires it: the gateway and
/// worker sides over `LocalFleet`, the built-in model, presets on `MemoryPresetStorage`, API keys
/// in `MemoryIdentityDirectory` (or no authentication), admission in memory. REST (HTTP/SSE) and
/// the WebSocket envelope on `/v1/ws`.
public final class APITestNode: @unchecked Sendable {
    public let server: TestServer
    public let presets = MemoryPresetStorage()
    public let identities: MemoryIdentityDirectory?
    public let completions: FleetCompletions
    /// Kept: the worker's subscriptions hold it weakly.
    public let worker: FleetWorker
    public var port: Int { server.port }

    /// `keys`: API key → identity (nil: authentication off). `quota`: admission (nil: none).
    public init(keys: [String: Identity]? = nil, quota: Quota? = nil, tokenMs: Double = 0, slots: Int = 64, maxQueue: Int = 64) throws {
        let logger = Logger(label: "api-test", level: .error)
        let metrics = Metrics()
        let fleet = LocalFleet(maxBacklog: maxQueue)
        let hub = FleetCompletions(nodeID: "test-node", local: fleet, metrics: metrics, logger: logger)
        let admission = quota.map { q in LocalAdmission(quota: { _ in q }) }
        hub.admission = admission
        completions = hub
        let directory = keys.map { MemoryIdentityDirectory(keys: $0) }
        identities = directory
        let authenticator: Authenticator = directory.map { StoreAuthenticator(store: $0) } ?? OpenAuthenticator()
        let api = APIRouter(authenticator: authenticator)
        let policy = ParameterPolicy(defaultModel: "builtin", knownModels: ["builtin"])
        let presetAPI = PresetAPI(store: presets, validator: PresetValidator(policy: policy), metrics: metrics, logger: logger)
        presetAPI.install(on: api)
        CompletionAPI(completions: hub, parser: CompletionRequestParser(policy: policy), metrics: metrics, models: ["builtin"],
                      presets: presetAPI, admission: admission).install(on: api)
        var ws = WebSocketConfiguration()
        ws.origins = OriginPolicy(allowed: [])
        let registry = SessionRegistry(tokenHash: { $0 })
        let wsConfig = ws
        server = try TestServer(webSocket: ws) { router in
            HTTPTransport.mount(api, on: router, origins: wsConfig.origins)
            WebSocketTransport.install(api, on: router, configuration: wsConfig, metrics: metrics, registry: registry)
        }
        var wc = WorkerConfiguration()
        wc.keepaliveNanos = 0
        worker = FleetWorker(nodeID: "test-node", queue: fleet, relay: fleet,
                                 backend: BuiltinBackend(model: APITestNode.model, pace: ModelPace(ttftMs: tokenMs, tokenMs: tokenMs, jitter: 0)),
                                 slots: WorkerSlots(slots: slots), loops: server.group.loops, metrics: Metrics(prefix: "w"), logger: logger,
                                 configuration: wc)
        worker.start()
        hub.start()
    }

    static let model = NGramModel()

    /// One HTTP request; the whole answer (the connection closes after it).
    public func request(_ method: String, _ path: String, body: String? = nil, headers: [String: String] = [:]) throws -> ParsedResponse {
        let c = try BlockingClient(port: port, timeoutMs: 5000)
        var head = "\(method) \(path) HTTP/1.1\r\nHost: 127.0.0.1\r\nConnection: close\r\n"
        for (k, v) in headers { head += "\(k): \(v)\r\n" }
        if let body { head += "Content-Type: application/json\r\nContent-Length: \(body.utf8.count)\r\n" }
        try c.send(head + "\r\n" + (body ?? ""))
        let (bytes, _) = c.readAll()
        guard let r = ResponseParser.parseAll(bytes).0.first else { throw TestError("no answer to \(method) \(path)") }
        return r
    }
}
