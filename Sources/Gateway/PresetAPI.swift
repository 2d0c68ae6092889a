import Domain
import FleetCore
import JSON
import NetCore
import Runtime
import Synchronization
#if canImport(Glibc)
import Glibc
#endif

/// The preset routes (REST and the WebSocket envelope): create, read, update, delete, search, and
/// the writes waiting for the database.
///
/// With a shared cache (Redis) reads by id go through it, and list/search fall back to it while
/// the database is down (marked `degraded`). With an outbox, writes the database cannot take are
/// queued (202, `pending`) and applied by the replayer once it is back; a user with writes
/// waiting has every new write queued behind them, so their order holds.
public final class PresetAPI: @unchecked Sendable {
    let store: PresetStorage
    let validator: PresetValidator
    let logger: Logger
    let metrics: Metrics
    public var cache: PresetCache?
    public var outbox: PresetOutbox?
    /// A committed cached copy older than this is checked against the database while it is up.
    public var freshMs = 300_000
    /// The version of each preset this node last wrote: a cached copy older than that is never
    /// served (another node's cache fill may lag this node's own write).
    private let written = Mutex<[String: Int]>([:])

    public init(store: PresetStorage, validator: PresetValidator, metrics: Metrics = Metrics(), logger: Logger) {
        self.store = store
        self.validator = validator
        self.metrics = metrics
        self.logger = logger
    }

    public func install(on api: APIRouter) {
        // 32 KiB of prompt (or messages) may arrive JSON-escaped (\uXXXX: six bytes a character).
        api.add("POST", "/v1/presets", bodyLimit: 256 * 1024) { [self] c, r in create(c, r) }
        api.add("GET", "/v1/presets") { [self] c, r in search(c, r) }
        // Literal routes: they win over /v1/presets/{id}.
        api.add("GET", "/v1/presets/pending") { [self] c, r in pending(c, r) }
        api.add("GET", "/v1/presets/export") { [self] c, r in export(c, r) }
        api.add("POST", "/v1/presets/import", bodyLimit: PresetAPI.maxImportBytes) { [self] c, r in importPresets(c, r) }
        api.add("DELETE", "/v1/presets/pending/{key}") { [self] c, r in dismiss(c, r) }
        api.add("GET", "/v1/presets/{id}") { [self] c, r in get(c, r) }
        api.add("PATCH", "/v1/presets/{id}", bodyLimit: 256 * 1024) { [self] c, r in update(c, r) }
        api.add("DELETE", "/v1/presets/{id}") { [self] c, r in delete(c, r) }
        api.add("GET", "/v1/presets/{id}/versions") { [self] c, r in versions(c, r) }
        api.add("GET", "/v1/presets/{id}/versions/{version}") { [self] c, r in version(c, r) }
        api.add("POST", "/v1/presets/{id}/versions/{version}/restore") { [self] c, r in restore(c, r) }
    }

    /// Whether the database is down as far as this node knows (no connection up).
    var databaseDown: Bool { store.isDown }

    func noteWritten(_ p: Preset) {
        written.withLock { w in
            if w.count >= 50_000 { w.removeAll(keepingCapacity: true) }
            w[p.id] = max(w[p.id] ?? 0, p.version)
        }
    }

    func writtenVersion(_ id: String) -> Int { written.withLock { $0[id] ?? 0 } }

    static func nowISO() -> String {
        var ts = timespec()
        clock_gettime(CLOCK_REALTIME, &ts)
        return Timestamps.format(micros: Int64(ts.tv_sec) * 1_000_000 + Int64(ts.tv_nsec) / 1000)
    }

    /// What a client sees for a database failure: only an unreachable database is
    /// `presets_degraded` with a retry hint; data the database refused is the request's fault
    /// (400, retrying cannot help); any other database error is ours (500, no retry hint).
    static func storeFailure(_ e: StoreFailure) -> APIError {
        switch e {
        case .refusedData: return APIError(.invalidRequest, "the preset store cannot hold this text (for example a NUL character)")
        case .unavailable: return unavailable
        case .failed: return APIError(.internalError, "the preset store could not answer this request")
        }
    }

    static let unavailable = APIError(.presetsDegraded, "presets are temporarily unavailable; completions still work", retryAfterMs: 2000)

    static func notFound(_ id: String) -> APIError { APIError(.notFound, "no preset with id '\(id.prefix(64))'") }

    static func conflict(_ name: String?) -> APIError {
        APIError(.conflict, "you already have a preset named '\(name ?? "")' (names are unique, ignoring case)", field: "name")
    }

    static func queueFull(_ bound: OutboxBound) -> APIError {
        let what: String
        switch bound {
        case .userCount: what = "you have too many preset changes waiting for the preset store"
        case .userBytes: what = "your preset changes waiting for the preset store are too large together"
        case .totalBytes: what = "too many preset changes are waiting for the preset store"
        }
        return APIError(.presetsDegraded, "\(what); try again when it is back", retryAfterMs: 5000)
    }

    func respond(_ reply: APIReply, status: Int = 200, _ preset: Preset, pending: Bool = false, degraded: Bool = false) {
        var w = JSONWriter(capacity: 512 + preset.prompt.utf8.count)
        preset.write(&w, pending: pending, degraded: degraded)
        reply.respond(status: status, json: w.bytes)
    }

    // MARK: reads

    /// Loads one of the user's presets (for reading or running it): through the shared cache,
    /// then the database (which fills the cache). `done` runs on `loop`.
    func load(id: String, for user: Identity, on loop: EventLoop, done: @escaping (Result<Preset, APIError>) -> Void) {
        loadEntry(id: id, for: user, on: loop) { r in done(r.map(\.cached.preset)) }
    }

    /// A preset as loaded: `degraded` when it came from the cache because the database could not answer.
    struct Loaded {
        let cached: CachedPreset
        let degraded: Bool
    }

    func loadEntry(id: String, for user: Identity, on loop: EventLoop, done: @escaping (Result<Loaded, APIError>) -> Void) {
        guard UUIDText.isValid(id) else { return done(.failure(PresetAPI.notFound(id))) }
        guard let cache else { return loadFromDatabase(id: id, for: user, on: loop, stale: nil, done: done) }
        let d = UncheckedBox(done)
        cache.lookup(user: user.userID, id: id) { [self] r in
            loop.execute { [self] in
                switch r {
                case .hit(let c, let age) where c.preset.version >= writtenVersion(id):
                    // A committed copy older than `freshMs` is refreshed while the database is up
                    // (bounds how long a copy can lag a write whose cache update failed); the
                    // copy still answers if the database cannot.
                    if c.pending || age <= freshMs || databaseDown {
                        metrics.presetCacheHits.add(1, ordering: .relaxed)
                        return d.value(.success(Loaded(cached: c, degraded: databaseDown)))
                    }
                    metrics.presetCacheMisses.add(1, ordering: .relaxed)
                    loadFromDatabase(id: id, for: user, on: loop, stale: c, done: d.value)
                case .deleted:
                    metrics.presetCacheHits.add(1, ordering: .relaxed)
                    d.value(.failure(PresetAPI.notFound(id)))
                default:
                    metrics.presetCacheMisses.add(1, ordering: .relaxed)
                    loadFromDatabase(id: id, for: user, on: loop, stale: nil, done: d.value)
                }
            }
        }
    }

    private func loadFromDatabase(id: String, for user: Identity, on loop: EventLoop, stale: CachedPreset?,
                                  done: @escaping (Result<Loaded, APIError>) -> Void) {
        store.get(user: user, id: id, on: loop) { [self] r in
            switch r {
            case .success(let p?):
                cache?.fill(user: user.userID, [p])
                done(.success(Loaded(cached: CachedPreset(preset: p, pending: false), degraded: false)))
            case .success(nil):
                if stale != nil { cache?.drop(user: user.userID, id: id, tombstone: true) { _ in } }
                done(.failure(PresetAPI.notFound(id)))
            case .failure(let e):
                if let stale, e.isUnavailable { return done(.success(Loaded(cached: stale, degraded: true))) }
                done(.failure(PresetAPI.storeFailure(e)))
            }
        }
    }

    func get(_ call: APICall, _ reply: APIReply) {
        let id = call.pathParameters["id"] ?? ""
        loadEntry(id: id, for: call.identity, on: reply.loop) { [self] r in
            switch r {
            case .success(let loaded):
                if loaded.degraded { metrics.presetReadsDegraded.add(1, ordering: .relaxed) }
                respond(reply, loaded.cached.preset, pending: loaded.cached.pending, degraded: loaded.degraded)
            case .failure(let e): reply.fail(e)
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
        guard query.count <= 200, query.utf8.count <= 800 else {
            reply.fail(.invalid("query", "query must be at most 200 characters (800 bytes)"))
            return
        }
        guard !query.utf8.contains(0) else {
            reply.fail(.invalid("query", "query must not contain NUL (U+0000) characters"))
            return
        }
        let cursor = call.query["cursor"].flatMap { $0.isEmpty ? nil : $0 }
        let user = call.identity
        let pageSize = limit
        store.search(user: user, query: query, limit: pageSize, cursor: cursor, on: reply.loop) { [self] r in
            switch r {
            case .success(let page?):
                // The sidebar's first page is what a user needs most during an outage: keep it cached.
                if query.trimmingWhitespace().isEmpty && cursor == nil { cache?.fill(user: user.userID, page.items.map(\.preset)) }
                respondList(reply, page.items, next: page.nextCursor, pendingIDs: [], degraded: false)
            case .success(nil):
                reply.fail(.invalid("cursor", "cursor is not one this server issued for this query"))
            case .failure(let e):
                guard e.isUnavailable, let cache else {
                    logger.warning("preset search failed", ["error": "\(e)"])
                    return reply.fail(PresetAPI.storeFailure(e))
                }
                searchCache(cache, user: user, query: query, limit: pageSize, cursor: cursor, reply: reply, failure: e)
            }
        }
    }

    /// The database is down: search the user's cached presets by the same rules.
    private func searchCache(_ cache: PresetCache, user: Identity, query: String, limit: Int, cursor: String?, reply: APIReply, failure: StoreFailure) {
        let loop = reply.loop
        let r = UncheckedBox(reply)
        cache.recent(user: user.userID) { [self] cached in
            loop.execute { [self] in
                let reply = r.value
                guard let cached else { return reply.fail(PresetAPI.storeFailure(failure)) }
                guard let page = PresetSearch.page(cached.map(\.preset), query: query, limit: limit, cursor: cursor) else {
                    return reply.fail(.invalid("cursor", "cursor is not one this server issued for this query"))
                }
                metrics.presetReadsDegraded.add(1, ordering: .relaxed)
                let pendingIDs = Set(cached.filter(\.pending).map(\.preset.id))
                respondList(reply, page.items, next: page.nextCursor, pendingIDs: pendingIDs, degraded: true)
            }
        }
    }

    private func respondList(_ reply: APIReply, _ items: [(preset: Preset, score: Double?)], next: String?, pendingIDs: Set<String>, degraded: Bool) {
        var w = JSONWriter(capacity: 4096)
        w.beginObject()
        w.key("object"); w.string("list")
        w.key("data")
        w.beginArray()
        for (p, score) in items { p.write(&w, score: score, pending: pendingIDs.contains(p.id)) }
        w.endArray()
        w.key("next_cursor")
        if let next { w.string(next) } else { w.null() }
        if degraded {
            // Only the presets this user touched recently are cached: a search may miss older ones.
            w.key("degraded"); w.bool(true)
        }
        w.endObject()
        reply.respond(status: 200, json: w.bytes)
    }

    // MARK: writes

    /// Runs `body` with whether the user has writes waiting in the outbox (false when there is no
    /// outbox, or it cannot say: then there is nowhere to queue anyway).
    private func withQueueState(_ user: Identity, on loop: EventLoop, _ body: @escaping (Bool) -> Void) {
        guard let outbox else { return body(false) }
        let b = UncheckedBox(body)
        outbox.hasQueued(user: user.userID) { q in loop.execute { b.value(q ?? false) } }
    }

    func create(_ call: APICall, _ reply: APIReply) {
        let fields: PresetFields
        do throws(APIError) { fields = try validator.fields(from: try call.requireObject(), creating: true) } catch {
            reply.fail(error)
            return
        }
        let user = call.identity
        // The id is ours, so an insert whose answer was lost can be retried through the outbox
        // without making a second preset.
        let id = UUIDText.random()
        withQueueState(user, on: reply.loop) { [self] queued in
            if queued { return enqueue(.create, id: id, fields: fields, user: user, reply: reply) }
            store.create(user: user, fields: fields, id: id, on: reply.loop) { [self] r in
                switch r {
                case .success(.success(let p)):
                    noteWritten(p)
                    afterCaching(p, user: user, reply: reply) { [self] in respond(reply, status: 201, p) }
                case .success(.failure(.conflict)): reply.fail(PresetAPI.conflict(fields.name))
                case .success(.failure): reply.fail(APIError(.internalError, "could not save the preset"))
                case .failure(let e) where e.isUnavailable && outbox != nil: enqueue(.create, id: id, fields: fields, user: user, reply: reply)
                case .failure(let e): logger.warning("preset create failed", ["error": "\(e)"]); reply.fail(PresetAPI.storeFailure(e))
                }
            }
        }
    }

    // MARK: export and import

    /// Presets one export page holds, and one import takes.
    static let maxExportPage = 1000
    static let maxImportItems = 1000
    static let maxImportBytes = 16 << 20

    /// `GET /v1/presets/export`: the user's presets newest first, whole, `limit` (≤ 1,000) at a
    /// time with `next_cursor`; what `POST /v1/presets/import` takes back. Only from the database:
    /// an export from the cache could silently miss presets.
    func export(_ call: APICall, _ reply: APIReply) {
        var limit = PresetAPI.maxExportPage
        if let l = call.query["limit"] {
            guard let n = Int(l), (1...PresetAPI.maxExportPage).contains(n) else {
                return reply.fail(.invalid("limit", "limit must be an integer from 1 to \(PresetAPI.maxExportPage)"))
            }
            limit = n
        }
        let cursor = call.query["cursor"].flatMap { $0.isEmpty ? nil : $0 }
        store.search(user: call.identity, query: "", limit: limit, cursor: cursor, on: reply.loop) { [self] r in
            switch r {
            case .success(let page?): respondList(reply, page.items.map { ($0.preset, nil) }, next: page.nextCursor, pendingIDs: [], degraded: false)
            case .success(nil): reply.fail(.invalid("cursor", "cursor is not one this server issued for an export"))
            case .failure(let e):
                if !e.isUnavailable { logger.warning("preset export failed", ["error": "\(e)"]) }
                reply.fail(PresetAPI.storeFailure(e))
            }
        }
    }

    /// One item of an import: created, or why not (with the item's own field names).
    enum ImportResult {
        case created(Preset)
        case failed(APIError)
    }

    /// `POST /v1/presets/import` with `{"presets": [...]}` (≤ 1,000; an export's items are taken
    /// as they are: their ids, dates and versions are ignored): every item is created on its
    /// own — all of it or nothing of it — in order, and answered with its result. Not queued
    /// through an outage: refused at once (503) while the database is down or writes of this
    /// user wait for it, so an import never mixes applied and pending items.
    func importPresets(_ call: APICall, _ reply: APIReply) {
        let items: [JSONValue]
        do throws(APIError) {
            guard let list = try call.requireObject()["presets"]?.arrayValue else {
                throw .invalid("presets", "send {\"presets\": [...]}: a list of presets")
            }
            guard list.count <= PresetAPI.maxImportItems else { throw .invalid("presets", "at most \(PresetAPI.maxImportItems) presets per import") }
            items = list
        } catch {
            return reply.fail(error)
        }
        var checked: [Result<PresetFields, APIError>] = []
        for (i, item) in items.enumerated() {
            guard let o = item.objectValue else {
                checked.append(.failure(.invalid("presets[\(i)]", "each preset must be an object")))
                continue
            }
            do throws(APIError) {
                // An export's item is taken as it is, in any state the API allows (a chat preset
                // whose messages were emptied, a completion preset that kept its messages).
                checked.append(.success(try validator.fields(from: o, creating: true, exported: true)))
            } catch {
                var e = error
                e.field = "presets[\(i)]" + (e.field.map { "." + $0 } ?? "")
                checked.append(.failure(e))
            }
        }
        let user = call.identity
        withQueueState(user, on: reply.loop) { [self] queued in
            if queued || store.isDown {
                return reply.fail(APIError(.presetsDegraded, "presets cannot be imported while the database is unavailable or your earlier "
                                           + "writes wait for it; retry shortly", retryAfterMs: 1000))
            }
            importNext(0, checked, results: [], user: user, reply: reply)
        }
    }

    private func importNext(_ from: Int, _ items: [Result<PresetFields, APIError>], results: [ImportResult], user: Identity, reply: APIReply) {
        var results = results
        var i = from
        // Items refused by validation are answered as they are; the next valid one is created.
        while i < items.count, case .failure(let e) = items[i] {
            results.append(.failed(e))
            i += 1
        }
        guard i < items.count, case .success(let fields) = items[i] else { return respondImport(reply, results) }
        let index = i, done = results
        store.create(user: user, fields: fields, id: UUIDText.random(), on: reply.loop) { [self] r in
            var results = done
            switch r {
            case .success(.success(let p)):
                noteWritten(p)
                results.append(.created(p))
            case .success(.failure(.conflict)):
                var e = PresetAPI.conflict(fields.name)
                e.field = "presets[\(index)].name"
                results.append(.failed(e))
            case .success(.failure):
                results.append(.failed(APIError(.internalError, "could not save the preset")))
            case .failure(let e):
                // The database went away mid-import: this item and the rest are not applied.
                let refusal = PresetAPI.storeFailure(e)
                for _ in index..<items.count { results.append(.failed(refusal)) }
                return respondImport(reply, results)
            }
            importNext(index + 1, items, results: results, user: user, reply: reply)
        }
    }

    private func respondImport(_ reply: APIReply, _ results: [ImportResult]) {
        var w = JSONWriter(capacity: 4096)
        var created = 0
        w.beginObject()
        w.key("object"); w.string("list")
        w.key("data")
        w.beginArray()
        for (i, r) in results.enumerated() {
            w.beginObject()
            w.key("index"); w.int(i)
            switch r {
            case .created(let p):
                created += 1
                w.key("status"); w.string("created")
                w.key("preset"); p.write(&w)
            case .failed(let e):
                w.key("status"); w.string("failed")
                w.key("error"); e.writeBody(&w)
            }
            w.endObject()
        }
        w.endArray()
        w.key("created"); w.int(created)
        w.key("failed"); w.int(results.count - created)
        w.endObject()
        reply.respond(status: 200, json: w.bytes)
    }

    // MARK: versions

    /// A version: `{"object": "preset.version", "preset_id", "version", "created_at", "name",
    /// "description", "tags", "prompt", "variables", "parameters"}`.
    static func writeVersion(_ v: Preset, _ w: inout JSONWriter) {
        w.beginObject()
        w.key("object"); w.string("preset.version")
        w.key("preset_id"); w.string(v.id)
        w.key("version"); w.int(v.version)
        w.key("created_at"); w.string(v.createdAt)
        v.writeContent(&w)
        w.endObject()
    }

    static func versionNumber(_ call: APICall) -> Int? {
        guard let s = call.pathParameters["version"], let n = Int(s), n >= 1, n <= Int(Int32.max) else { return nil }
        return n
    }

    /// `GET /v1/presets/{id}/versions?limit=&cursor=`: newest first; the cursor is a version number.
    func versions(_ call: APICall, _ reply: APIReply) {
        let id = call.pathParameters["id"] ?? ""
        var limit = 20
        if let l = call.query["limit"] {
            guard let n = Int(l), (1...100).contains(n) else { return reply.fail(.invalid("limit", "limit must be an integer from 1 to 100")) }
            limit = n
        }
        var before: Int?
        if let c = call.query["cursor"], !c.isEmpty {
            guard let n = Int(c), n >= 1, n <= Int(Int32.max) else { return reply.fail(.invalid("cursor", "cursor is not one this server issued")) }
            before = n
        }
        guard UUIDText.isValid(id) else { return reply.fail(PresetAPI.notFound(id)) }
        store.versions(user: call.identity, id: id, limit: limit + 1, before: before, on: reply.loop) { [self] r in
            switch r {
            case .success(nil): reply.fail(PresetAPI.notFound(id))
            case .success(let list?):
                var w = JSONWriter(capacity: 4096)
                w.beginObject()
                w.key("object"); w.string("list")
                w.key("data")
                w.beginArray()
                for v in list.prefix(limit) { PresetAPI.writeVersion(v, &w) }
                w.endArray()
                w.key("next_cursor")
                if list.count > limit, let last = list.prefix(limit).last { w.string(String(last.version)) } else { w.null() }
                w.endObject()
                reply.respond(status: 200, json: w.bytes)
            case .failure(let e): reply.fail(PresetAPI.storeFailure(e))
            }
        }
    }

    /// `GET /v1/presets/{id}/versions/{n}`.
    func version(_ call: APICall, _ reply: APIReply) {
        let id = call.pathParameters["id"] ?? ""
        guard UUIDText.isValid(id), let n = PresetAPI.versionNumber(call) else { return reply.fail(PresetAPI.notFound(id)) }
        store.version(user: call.identity, id: id, number: n, on: reply.loop) { r in
            switch r {
            case .success(let v?):
                var w = JSONWriter(capacity: 1024 + v.prompt.utf8.count)
                PresetAPI.writeVersion(v, &w)
                reply.respond(status: 200, json: w.bytes)
            case .success(nil): reply.fail(APIError(.notFound, "no version \(n) of preset '\(id.prefix(64))'"))
            case .failure(let e): reply.fail(PresetAPI.storeFailure(e))
            }
        }
    }

    /// `POST /v1/presets/{id}/versions/{n}/restore`: a new version equal in content to `n` (an
    /// ordinary update: it conflicts, queues and replays like one).
    func restore(_ call: APICall, _ reply: APIReply) {
        let id = call.pathParameters["id"] ?? ""
        guard UUIDText.isValid(id), let n = PresetAPI.versionNumber(call) else { return reply.fail(PresetAPI.notFound(id)) }
        let user = call.identity
        store.version(user: user, id: id, number: n, on: reply.loop) { [self] r in
            switch r {
            case .success(let v?):
                var f = PresetFields()
                f.name = v.name
                f.description = v.description
                f.tags = v.tags
                f.prompt = v.prompt
                f.parameters = v.parameters
                f.mode = v.mode
                f.messages = v.messages
                applyUpdate(id: id, fields: f, user: user, reply: reply)
            case .success(nil): reply.fail(APIError(.notFound, "no version \(n) of preset '\(id.prefix(64))'"))
            case .failure(let e): reply.fail(PresetAPI.storeFailure(e))
            }
        }
    }

    /// Loads version `n` of one of the user's presets to run it (`preset_version`).
    func loadVersion(id: String, number: Int, for user: Identity, on loop: EventLoop, done: @escaping (Result<Preset, APIError>) -> Void) {
        guard UUIDText.isValid(id) else { return done(.failure(PresetAPI.notFound(id))) }
        store.version(user: user, id: id, number: number, on: loop) { r in
            switch r {
            case .success(let v?): done(.success(v))
            case .success(nil): done(.failure(APIError(.notFound, "no version \(number) of preset '\(id.prefix(64))'", field: "preset_version")))
            case .failure(let e): done(.failure(PresetAPI.storeFailure(e)))
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
        guard UUIDText.isValid(id) else { return reply.fail(PresetAPI.notFound(id)) }
        applyUpdate(id: id, fields: fields, user: call.identity, reply: reply)
    }

    private func applyUpdate(id: String, fields: PresetFields, user: Identity, reply: APIReply) {
        withQueueState(user, on: reply.loop) { [self] queued in
            if queued { return enqueue(.update, id: id, fields: fields, user: user, reply: reply) }
            store.update(user: user, id: id, fields: fields, on: reply.loop) { [self] r in
                switch r {
                case .success(.success(let p)):
                    noteWritten(p)
                    afterCaching(p, user: user, reply: reply) { [self] in respond(reply, p) }
                case .success(.failure(.conflict)): reply.fail(PresetAPI.conflict(fields.name))
                case .failure(let e):
                    if e.isUnavailable && outbox != nil { return enqueue(.update, id: id, fields: fields, user: user, reply: reply) }
                    reply.fail(PresetAPI.storeFailure(e))
                case .success(.failure(.notFound)):
                    cache?.drop(user: user.userID, id: id, tombstone: true) { _ in }
                    reply.fail(PresetAPI.notFound(id))
                }
            }
        }
    }

    func delete(_ call: APICall, _ reply: APIReply) {
        let id = call.pathParameters["id"] ?? ""
        guard UUIDText.isValid(id) else { return reply.fail(PresetAPI.notFound(id)) }
        let user = call.identity
        withQueueState(user, on: reply.loop) { [self] queued in
            if queued { return enqueue(.delete, id: id, fields: PresetFields(), user: user, reply: reply) }
            store.delete(user: user, id: id, on: reply.loop) { [self] r in
                switch r {
                case .success(let deleted):
                    guard let cache else { return deleted ? PresetAPI.respondDeleted(reply, id) : reply.fail(PresetAPI.notFound(id)) }
                    // Gone from the cache before the answer: no node serves it after this.
                    let loop = reply.loop
                    let rb = UncheckedBox(reply)
                    cache.drop(user: user.userID, id: id, tombstone: true) { _ in
                        loop.execute { deleted ? PresetAPI.respondDeleted(rb.value, id) : rb.value.fail(PresetAPI.notFound(id)) }
                    }
                case .failure(let e) where e.isUnavailable && outbox != nil: enqueue(.delete, id: id, fields: PresetFields(), user: user, reply: reply)
                case .failure(let e): reply.fail(PresetAPI.storeFailure(e))
                }
            }
        }
    }

    /// Runs `then` once the cache holds the written preset (or could not take it): the answer
    /// leaves after the cache is current, so a read on any node after it sees this version.
    private func afterCaching(_ p: Preset, user: Identity, reply: APIReply, then: @escaping () -> Void) {
        guard let cache else { return then() }
        let loop = reply.loop
        let t = UncheckedBox(then)
        cache.fill(user: user.userID, [p]) { _ in loop.execute { t.value() } }
    }

    /// `unverified`: queued during an outage for a preset the cache does not hold, so whether it
    /// exists could not be checked; the delete applies when the database is back, if it does.
    static func respondDeleted(_ reply: APIReply, _ id: String, pending: Bool = false, unverified: Bool = false) {
        var w = JSONWriter()
        w.beginObject(); w.key("id"); w.string(id); w.key("deleted"); w.bool(true)
        if pending { w.key("pending"); w.bool(true) }
        if unverified {
            w.key("verified"); w.bool(false)
            w.key("message"); w.string("the preset store is down and this preset is not in the cache: the delete is applied when the store is back, if the preset exists")
        }
        w.endObject()
        reply.respond(status: pending ? 202 : 200, json: w.bytes)
    }

    /// Queues a write for the replayer and answers 202 with what the preset will be. Creates and
    /// updates are checked against the user's cached presets (a name they already use is 409 now,
    /// not a failure later); an update needs the preset in the cache (its current state).
    private func enqueue(_ op: PresetWrite.Op, id: String, fields: PresetFields, user: Identity, reply: APIReply) {
        guard let outbox, cache != nil else { return reply.fail(PresetAPI.unavailable) }
        let loop = reply.loop
        let rb = UncheckedBox(reply)
        let now = PresetAPI.nowISO()
        let write = PresetWrite(key: UUIDText.random(), op: op, presetID: id, userID: user.userID, orgID: user.orgID, fields: fields, queuedAt: now)
        // Whether it fits first (one cheap call): a refusal never reads the user's cached presets.
        outbox.room(user: user.userID, bytes: write.encoded.utf8.count) { [self] refusal in
            loop.execute { [self] in
                switch refusal {
                case nil: enqueue(write, op, id: id, fields: fields, user: user, now: now, reply: rb.value)
                case .full(let bound)?: refuseFull(bound, reply: rb.value)
                case .unavailable?: rb.value.fail(PresetAPI.unavailable)
                }
            }
        }
    }

    private func refuseFull(_ bound: OutboxBound, reply: APIReply) {
        metrics.presetWritesRefusedFull.withLock { $0[bound, default: 0] += 1 }
        reply.fail(PresetAPI.queueFull(bound))
    }

    private func enqueue(_ write: PresetWrite, _ op: PresetWrite.Op, id: String, fields: PresetFields, user: Identity, now: String,
                         reply: APIReply) {
        guard let outbox, let cache else { return reply.fail(PresetAPI.unavailable) }
        let loop = reply.loop
        let rb = UncheckedBox(reply)
        cache.recent(user: user.userID) { [self] cached in
            loop.execute { [self] in
                let reply = rb.value
                let current = cached?.first { $0.preset.id == id }
                var showing: Preset?
                switch op {
                case .create:
                    showing = Preset.made(id: id, userID: user.userID, fields: fields, at: now)
                case .update:
                    guard let current else {
                        return reply.fail(APIError(.presetsDegraded, "the preset store is down and this preset is not in the cache, so it cannot be changed now; completions still work",
                                                   retryAfterMs: 2000))
                    }
                    var p = current.preset.applying(fields)
                    p.version += 1
                    p.updatedAt = now
                    showing = p
                case .delete:
                    showing = nil
                }
                if let name = fields.name?.lowercased(), let cached,
                   cached.contains(where: { $0.preset.id != id && $0.preset.name.lowercased() == name }) {
                    return reply.fail(PresetAPI.conflict(fields.name))
                }
                let shown = showing
                outbox.append(write, showing: shown) { [self] r in
                    loop.execute { [self] in
                        let reply = rb.value
                        switch r {
                        case .success:
                            metrics.presetWritesQueued.add(1, ordering: .relaxed)
                            if let shown { noteWritten(shown); respond(reply, status: 202, shown, pending: true) } else {
                                PresetAPI.respondDeleted(reply, id, pending: true, unverified: current == nil)
                            }
                        case .failure(.full(let bound)): refuseFull(bound, reply: reply)
                        case .failure(.unavailable):
                            reply.fail(PresetAPI.unavailable)
                        }
                    }
                }
            }
        }
    }

    // MARK: writes waiting

    /// The user's writes not in the database yet: queued (waiting for it) and failed (could not be
    /// applied any more; kept until dismissed).
    func pending(_ call: APICall, _ reply: APIReply) {
        let user = call.identity
        let loop = reply.loop
        let rb = UncheckedBox(reply)
        let collect: ([PresetWrite]?) -> Void = { [self] queued in
            store.failedWrites(user: user, on: loop) { r in
                let reply = rb.value
                let failed = try? r.get()
                if queued == nil && failed == nil { return reply.fail(PresetAPI.unavailable) }
                var w = JSONWriter(capacity: 1024)
                w.beginObject()
                w.key("object"); w.string("list")
                w.key("data")
                w.beginArray()
                for q in queued ?? [] { PresetAPI.writeEntry(&w, q, status: "queued", error: nil) }
                for f in failed ?? [] { PresetAPI.writeEntry(&w, f.write, status: "failed", error: (f.code, f.message, f.failedAt)) }
                w.endArray()
                if queued == nil || failed == nil { w.key("degraded"); w.bool(true) }
                w.endObject()
                reply.respond(status: 200, json: w.bytes)
            }
        }
        guard let outbox else { return collect([]) }
        let c = UncheckedBox(collect)
        outbox.queued(user: user.userID) { q in loop.execute { c.value(q) } }
    }

    static func writeEntry(_ w: inout JSONWriter, _ q: PresetWrite, status: String, error: (String, String, String)?) {
        w.beginObject()
        w.key("key"); w.string(q.key)
        w.key("object"); w.string("preset.write")
        w.key("op"); w.string(q.op.rawValue)
        w.key("preset_id"); w.string(q.presetID)
        w.key("status"); w.string(status)
        w.key("queued_at"); w.string(q.queuedAt)
        w.key("fields"); q.fields.write(&w)
        if let (code, message, at) = error {
            w.key("error"); w.beginObject(); w.key("code"); w.string(code); w.key("message"); w.string(message); w.endObject()
            w.key("failed_at"); w.string(at)
        }
        w.endObject()
    }

    /// Dismisses a failed write (the owner has seen it).
    func dismiss(_ call: APICall, _ reply: APIReply) {
        let key = call.pathParameters["key"] ?? ""
        let user = call.identity
        store.dismissFailedWrite(user: user, key: key, on: reply.loop) { r in
            switch r {
            case .success(true):
                var w = JSONWriter()
                w.beginObject(); w.key("key"); w.string(key); w.key("dismissed"); w.bool(true); w.endObject()
                reply.respond(status: 200, json: w.bytes)
            case .success(false): reply.fail(APIError(.notFound, "no failed preset write with key '\(key.prefix(64))'"))
            case .failure(let e): reply.fail(PresetAPI.storeFailure(e))
            }
        }
    }
}
