import Runtime

/// Why the store could not answer: unreachable (retry later; the preset flows degrade to the
/// cache and the outbox), data it cannot hold (the request's fault), or anything else (ours).
public enum StoreFailure: Error, Sendable, Equatable {
    case unavailable
    case refusedData
    case failed(String)

    public var isUnavailable: Bool { self == .unavailable }
}

/// One page of a user's presets, best match first (score nil for a list without a query).
public struct PresetPage: Sendable {
    public let items: [(preset: Preset, score: Double?)]
    public let nextCursor: String?
    public init(items: [(preset: Preset, score: Double?)], nextCursor: String?) {
        self.items = items
        self.nextCursor = nextCursor
    }
}

/// A write the store refused for the request's sake (the name is taken, the preset is gone).
public enum PresetWriteRefusal: Error, Sendable, Equatable { case conflict, notFound }

/// A queued write that could not be applied any more (kept until its owner dismisses it).
public struct FailedPresetWrite: Sendable {
    public let write: PresetWrite
    public let code: String
    public let message: String
    public let failedAt: String
    public init(write: PresetWrite, code: String, message: String, failedAt: String) {
        self.write = write
        self.code = code
        self.message = message
        self.failedAt = failedAt
    }
}

/// The presets of each user, as the preset flows use them (a port; PostgreSQL implements it).
/// Every call is scoped by the user: another user's preset is simply not found. Answers are
/// delivered on `queue`.
public protocol PresetStorage: AnyObject, Sendable {
    /// Whether the store is down as far as this node knows (no connection up).
    var isDown: Bool { get }
    func get(user: Identity, id: String, on queue: CallbackQueue, done: @escaping (Result<Preset?, StoreFailure>) -> Void)
    /// nil inside: the cursor is not one this store issued for this query.
    func search(user: Identity, query: String, limit: Int, cursor: String?, on queue: CallbackQueue,
                done: @escaping (Result<PresetPage?, StoreFailure>) -> Void)
    /// `id` is the caller's, so a create whose answer was lost can be retried without a second preset.
    func create(user: Identity, fields: PresetFields, id: String, on queue: CallbackQueue,
                done: @escaping (Result<Result<Preset, PresetWriteRefusal>, StoreFailure>) -> Void)
    func update(user: Identity, id: String, fields: PresetFields, on queue: CallbackQueue,
                done: @escaping (Result<Result<Preset, PresetWriteRefusal>, StoreFailure>) -> Void)
    /// The preset's versions newest first (each a `Preset` holding that version's content),
    /// older than `before` if given; nil inside: not this user's preset.
    func versions(user: Identity, id: String, limit: Int, before: Int?, on queue: CallbackQueue,
                  done: @escaping (Result<[Preset]?, StoreFailure>) -> Void)
    /// One version, or nil.
    func version(user: Identity, id: String, number: Int, on queue: CallbackQueue, done: @escaping (Result<Preset?, StoreFailure>) -> Void)
    /// false: there was no such preset.
    func delete(user: Identity, id: String, on queue: CallbackQueue, done: @escaping (Result<Bool, StoreFailure>) -> Void)
    func failedWrites(user: Identity, on queue: CallbackQueue, done: @escaping (Result<[FailedPresetWrite], StoreFailure>) -> Void)
    /// false: no failed write with that key.
    func dismissFailedWrite(user: Identity, key: String, on queue: CallbackQueue, done: @escaping (Result<Bool, StoreFailure>) -> Void)
}

/// Who a credential belongs to, and sign-in sessions (a port; PostgreSQL implements it, with a
/// cache fed by its change notifications). Answers are delivered on `queue`.
public protocol IdentityDirectory: AnyObject, Sendable {
    func authenticate(_ credential: Credential, on queue: CallbackQueue, done: @escaping (Result<Identity, IdentityFailure>) -> Void)
    /// A new session for an API key: its token and whose it is.
    func createSession(key: String, on queue: CallbackQueue, done: @escaping (Result<(String, Identity), IdentityFailure>) -> Void)
    /// true once the session is gone (or was never there).
    func deleteSession(token: String, on queue: CallbackQueue, done: @escaping (Bool) -> Void)
    /// How long a session lives, seconds (its cookie's Max-Age).
    var sessionLifetimeSeconds: Int { get }
}

public enum IdentityFailure: Error, Sendable, Equatable {
    /// Unknown, revoked or expired.
    case invalid
    /// The store cannot answer now.
    case unavailable
}

extension UUIDText {
    /// A random version-4 UUID (the system generator: getrandom).
    public static func random() -> String {
        var g = SystemRandomNumberGenerator()
        return make((0..<16).map { _ in UInt8.random(in: 0...255, using: &g) })
    }
}
