import Domain
import JSON
import NetCore
import PresetStore
import Runtime

/// The preset routes (REST and the WebSocket envelope): create, read, update, delete, search.
public final class PresetAPI: @unchecked Sendable {
    let pool: PGPool
    let validator: PresetValidator
    let logger: Logger

    public init(pool: PGPool, validator: PresetValidator, logger: Logger) {
        self.pool = pool
        self.validator = validator
        self.logger = logger
    }

    public func install(on api: APIRouter) {
        api.add("POST", "/v1/presets", bodyLimit: 64 * 1024) { [self] c, r in create(c, r) }
        api.add("GET", "/v1/presets") { [self] c, r in search(c, r) }
        api.add("GET", "/v1/presets/{id}") { [self] c, r in get(c, r) }
        api.add("PATCH", "/v1/presets/{id}", bodyLimit: 64 * 1024) { [self] c, r in update(c, r) }
        api.add("DELETE", "/v1/presets/{id}") { [self] c, r in delete(c, r) }
    }

    /// What a client sees for a database failure: only an unreachable database is
    /// `presets_degraded` with a retry hint; data the database refused is the request's fault
    /// (400, retrying cannot help); any other database error is ours (500, no retry hint).
    static func storeFailure(_ e: PGError) -> APIError {
        if e.isDataError { return APIError(.invalidRequest, "the preset store cannot hold this text (for example a NUL character)") }
        if e.isUnavailable { return APIError(.presetsDegraded, "presets are temporarily unavailable; completions still work", retryAfterMs: 2000) }
        return APIError(.internalError, "the preset store could not answer this request")
    }

    static func notFound(_ id: String) -> APIError { APIError(.notFound, "no preset with id '\(id.prefix(64))'") }

    static func conflict(_ name: String?) -> APIError {
        APIError(.conflict, "you already have a preset named '\(name ?? "")' (names are unique, ignoring case)", field: "name")
    }

    func respond(_ reply: APIReply, status: Int = 200, _ preset: Preset) {
        var w = JSONWriter(capacity: 512 + preset.prompt.utf8.count)
        preset.write(&w)
        reply.respond(status: status, json: w.bytes)
    }

    /// Loads one of the user's presets (for running it).
    func load(id: String, for user: Identity, on loop: EventLoop, done: @escaping (Result<Preset, APIError>) -> Void) {
        pool.run(on: loop, { conn throws(PGError) in try PresetRepository.get(conn, user: user, id: id) }) { r in
            switch r {
            case .success(let p?): done(.success(p))
            case .success(nil): done(.failure(PresetAPI.notFound(id)))
            case .failure(let e): done(.failure(PresetAPI.storeFailure(e)))
            }
        }
    }

    func create(_ call: APICall, _ reply: APIReply) {
        let fields: PresetFields
        do throws(APIError) { fields = try validator.fields(from: try call.requireObject(), creating: true) } catch {
            reply.fail(error)
            return
        }
        let user = call.identity
        pool.run(on: reply.loop, { conn throws(PGError) in try PresetRepository.create(conn, user: user, fields: fields) }) { [self] r in
            switch r {
            case .success(.success(let p)): respond(reply, status: 201, p)
            case .success(.failure(.conflict)): reply.fail(PresetAPI.conflict(fields.name))
            case .success(.failure): reply.fail(APIError(.internalError, "could not save the preset"))
            case .failure(let e): logger.warning("preset create failed", ["error": e.description]); reply.fail(PresetAPI.storeFailure(e))
            }
        }
    }

    func get(_ call: APICall, _ reply: APIReply) {
        let id = call.pathParameters["id"] ?? ""
        load(id: id, for: call.identity, on: reply.loop) { [self] r in
            switch r {
            case .success(let p): respond(reply, p)
            case .failure(let e): reply.fail(e)
            }
        }
    }

    func update(_ call: APICall, _ reply: APIReply) {
        let id = call.pathParameters["id"] ?? ""
        let fields: PresetFields
        do throws(APIError) { fields = try validator.fields(from: try call.requireObject(), creating: false) } catch {
            reply.fail(error)
            return
        }
        let user = call.identity
        pool.run(on: reply.loop, { conn throws(PGError) in try PresetRepository.update(conn, user: user, id: id, fields: fields) }) { [self] r in
            switch r {
            case .success(.success(let p)): respond(reply, p)
            case .success(.failure(.conflict)): reply.fail(PresetAPI.conflict(fields.name))
            case .success(.failure(.database(let e))): reply.fail(PresetAPI.storeFailure(e))
            case .success(.failure): reply.fail(PresetAPI.notFound(id))
            case .failure(let e): reply.fail(PresetAPI.storeFailure(e))
            }
        }
    }

    func delete(_ call: APICall, _ reply: APIReply) {
        let id = call.pathParameters["id"] ?? ""
        let user = call.identity
        pool.run(on: reply.loop, { conn throws(PGError) in try PresetRepository.delete(conn, user: user, id: id) }) { r in
            switch r {
            case .success(true):
                var w = JSONWriter()
                w.beginObject(); w.key("id"); w.string(id); w.key("deleted"); w.bool(true); w.endObject()
                reply.respond(status: 200, json: w.bytes)
            case .success(false): reply.fail(PresetAPI.notFound(id))
            case .failure(let e): reply.fail(PresetAPI.storeFailure(e))
            }
        }
    }

    func search(_ call: APICall, _ reply: APIReply) {
        let query = call.query["query"] ?? call.query["q"] ?? ""
        var limit = 20
        if let l = call.query["limit"] {
            guard let n = Int(l), (1...100).contains(n) else {
                reply.fail(.invalid("limit", "limit must be an integer from 1 to 100"))
                return
            }
            limit = n
        }
        guard query.count <= 200 else {
            reply.fail(.invalid("query", "query must be at most 200 characters"))
            return
        }
        guard !query.utf8.contains(0) else {
            reply.fail(.invalid("query", "query must not contain NUL (U+0000) characters"))
            return
        }
        let cursor = call.query["cursor"].flatMap { $0.isEmpty ? nil : $0 }
        let user = call.identity
        let pageSize = limit
        pool.run(on: reply.loop, { conn throws(PGError) in
            try PresetRepository.search(conn, user: user, query: query, limit: pageSize, cursor: cursor)
        }) { [self] r in
            switch r {
            case .success(.success(let page)):
                var w = JSONWriter(capacity: 4096)
                w.beginObject()
                w.key("object"); w.string("list")
                w.key("data")
                w.beginArray()
                for (p, score) in page.items { p.write(&w, score: score) }
                w.endArray()
                w.key("next_cursor")
                if let c = page.nextCursor { w.string(c) } else { w.null() }
                w.endObject()
                reply.respond(status: 200, json: w.bytes)
            case .success(.failure(.badCursor)):
                reply.fail(.invalid("cursor", "cursor is not one this server issued for this query"))
            case .success(.failure(.database(let e))), .failure(let e):
                logger.warning("preset search failed", ["error": e.description])
                reply.fail(PresetAPI.storeFailure(e))
            }
        }
    }
}
