import Domain
import Runtime

/// The preset port on PostgreSQL: each call is one query on the pool (a thread per connection),
/// answered on the caller's queue. Database errors become `StoreFailure` here; nothing above
/// this file sees a PGError or SQL.
public final class PostgresPresetStorage: PresetStorage, @unchecked Sendable {
    let pool: PGPool

    public init(pool: PGPool) { self.pool = pool }

    public var isDown: Bool { pool.healthyConnections == 0 }

    static func failure(_ e: PGError) -> StoreFailure {
        if e.isDataError { return .refusedData }
        if e.isUnavailable { return .unavailable }
        return .failed(e.description)
    }

    private func run<T: Sendable>(_ queue: CallbackQueue, _ body: @escaping @Sendable (PGConnection) throws(PGError) -> T,
                                  _ done: @escaping (Result<T, StoreFailure>) -> Void) {
        pool.run(on: queue, body) { r in done(r.mapError(PostgresPresetStorage.failure)) }
    }

    private static func writeResult(_ r: Result<Preset, PresetRepository.WriteError>) throws(PGError) -> Result<Preset, PresetWriteRefusal> {
        switch r {
        case .success(let p): return .success(p)
        case .failure(.conflict): return .failure(.conflict)
        case .failure(.notFound): return .failure(.notFound)
        case .failure(.database(let e)): throw e
        }
    }

    public func get(user: Identity, id: String, on queue: CallbackQueue, done: @escaping (Result<Preset?, StoreFailure>) -> Void) {
        run(queue, { conn throws(PGError) in try PresetRepository.get(conn, user: user, id: id) }, done)
    }

    public func search(user: Identity, query: String, limit: Int, cursor: String?, on queue: CallbackQueue,
                       done: @escaping (Result<PresetPage?, StoreFailure>) -> Void) {
        run(queue, { conn throws(PGError) -> PresetPage? in
            switch try PresetRepository.search(conn, user: user, query: query, limit: limit, cursor: cursor) {
            case .success(let page): return PresetPage(items: page.items, nextCursor: page.nextCursor)
            case .failure(.badCursor): return nil
            case .failure(.database(let e)): throw e
            }
        }, done)
    }

    public func create(user: Identity, fields: PresetFields, id: String, on queue: CallbackQueue,
                       done: @escaping (Result<Result<Preset, PresetWriteRefusal>, StoreFailure>) -> Void) {
        run(queue, { conn throws(PGError) in
            try PostgresPresetStorage.writeResult(try PresetRepository.create(conn, user: user, fields: fields, id: id))
        }, done)
    }

    public func update(user: Identity, id: String, fields: PresetFields, on queue: CallbackQueue,
                       done: @escaping (Result<Result<Preset, PresetWriteRefusal>, StoreFailure>) -> Void) {
        run(queue, { conn throws(PGError) in
            try PostgresPresetStorage.writeResult(try PresetRepository.update(conn, user: user, id: id, fields: fields))
        }, done)
    }

    public func versions(user: Identity, id: String, limit: Int, before: Int?, on queue: CallbackQueue,
                         done: @escaping (Result<[Preset]?, StoreFailure>) -> Void) {
        run(queue, { conn throws(PGError) in try PresetRepository.versions(conn, user: user, id: id, limit: limit, before: before) }, done)
    }

    public func version(user: Identity, id: String, number: Int, on queue: CallbackQueue, done: @escaping (Result<Preset?, StoreFailure>) -> Void) {
        run(queue, { conn throws(PGError) in try PresetRepository.version(conn, user: user, id: id, number: number) }, done)
    }

    public func delete(user: Identity, id: String, on queue: CallbackQueue, done: @escaping (Result<Bool, StoreFailure>) -> Void) {
        run(queue, { conn throws(PGError) in try PresetRepository.delete(conn, user: user, id: id) }, done)
    }

    public func failedWrites(user: Identity, on queue: CallbackQueue, done: @escaping (Result<[FailedPresetWrite], StoreFailure>) -> Void) {
        run(queue, { conn throws(PGError) in
            try PresetRepository.failedWrites(conn, user: user).map {
                FailedPresetWrite(write: $0.write, code: $0.code, message: $0.message, failedAt: $0.failedAt)
            }
        }, done)
    }

    public func dismissFailedWrite(user: Identity, key: String, on queue: CallbackQueue, done: @escaping (Result<Bool, StoreFailure>) -> Void) {
        run(queue, { conn throws(PGError) in try PresetRepository.dismissFailedWrite(conn, user: user, key: key) }, done)
    }
}
