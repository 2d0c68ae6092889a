import Domain
import NetCore
import Runtime
import Synchronization
#if canImport(Glibc)
import Glibc
#endif

/// Resolves credentials to identities: API keys (hashed), browser sessions, and the admin CLI's
/// key management. Answers come from the database; the last good answer per credential is kept so
/// that, while the database is down, signed-in users keep generating (stale-if-error, up to an
/// hour). Revocations reach the cache through LISTEN/NOTIFY, so a revoked key is not honoured even
/// from the cache during an outage.
public final class IdentityStore: IdentityDirectory, @unchecked Sendable {
    let pool: PGPool
    let logger: Logger
    public static let sessionLifetimeSeconds = 7 * 24 * 3600
    public var sessionLifetimeSeconds: Int { IdentityStore.sessionLifetimeSeconds }

    private struct Entry {
        let identity: Identity
        let checkedAt: UInt64
        var sharedAt: UInt64
        init(identity: Identity, checkedAt: UInt64, sharedAt: UInt64) {
            self.identity = identity
            self.checkedAt = checkedAt
            self.sharedAt = sharedAt
        }
    }

    /// The credential's SHA-256 in hex: its name in the database and the shared cache.
    static func hash(_ c: Credential) -> String {
        switch c {
        case .apiKey(let k), .session(let k): return Credentials.hex(Credentials.sha256(k))
        }
    }
    private let cache = Mutex<[Credential: Entry]>([:])
    private let stopping = Atomic<Bool>(false)
    private let lastFailureLog = Atomic<UInt64>(0)
    private var listenerThread: pthread_t?
    /// Told of every revocation the feed announces (on the feed's thread), after the cache forgot
    /// it; and `.recheckAll` whenever the feed (re)connects, since announcements may have been
    /// missed while it was down. Set before `startListening`.
    public var onRevocation: (@Sendable (Revocation) -> Void)?
    static let staleTTLNanos: UInt64 = 3_600_000_000_000
    /// The fleet's shared copy (Redis): written when the database confirms a credential, read
    /// when it cannot answer, told of every revocation. Set before the node serves.
    public var shared: SharedIdentityCache?
    /// Revocations made while the database was down that it has not recorded yet: its answers
    /// must not bring these credentials back (kept fresh by the outbox replayer).
    private let unrecorded = Mutex<(keys: Set<Int64>, sessions: Set<String>)>(([], []))

    public func setUnrecordedRevocations(_ rs: [Revocation]) {
        var keys = Set<Int64>(), sessions = Set<String>()
        for r in rs {
            switch r {
            case .key(let id): keys.insert(id)
            case .session(let h): sessions.insert(h)
            case .recheckAll: break
            }
        }
        unrecorded.withLock { $0 = (keys, sessions) }
    }

    /// A credential confirmed by the database, unless revoked in a way the database has not recorded yet.
    private func stillValid(_ c: Credential, _ id: Identity) -> Bool {
        unrecorded.withLock { u in
            if u.keys.isEmpty && u.sessions.isEmpty { return true }
            if u.keys.contains(id.keyID) { return false }
            if case .session = c, u.sessions.contains(IdentityStore.hash(c)) { return false }
            return true
        }
    }

    /// A confirmed credential is written to the shared cache again only after this long.
    static let sharedRefreshNanos: UInt64 = 60_000_000_000

    public init(pool: PGPool, logger: Logger) {
        self.pool = pool
        self.logger = logger
    }

    public typealias Failure = IdentityFailure

    /// Resolves a credential; `done` runs on `loop`. Every call asks the database, so a key revoked
    /// a moment ago is refused on the very next request; the cache only answers while the database
    /// cannot. Lookups that arrive while one is running are answered together by the next query
    /// (`key_hash = ANY(…)`), so under load the database sees one query per batch, not per request.
    public func authenticate(_ credential: Credential, on loop: CallbackQueue, done: @escaping (Result<Identity, IdentityFailure>) -> Void) {
        switch credential {
        case .apiKey(let k), .session(let k):
            guard Credentials.looksValid(k) else { done(.failure(.invalid)); return }
        }
        let start: Bool = batch.withLock { b in
            b.items.append(PendingLookup(credential: credential, loop: loop, done: done))
            if b.running { return false }
            b.running = true
            return true
        }
        if start { runBatches() }
    }

    private struct PendingLookup: @unchecked Sendable {
        let credential: Credential
        let loop: CallbackQueue
        let done: (Result<Identity, Failure>) -> Void
    }
    private struct Batch { var items: [PendingLookup] = []; var running = false }
    private let batch = Mutex(Batch())
    static let maxBatch = 256

    /// Takes what is pending and answers it with one query per credential kind, until nothing is left.
    private func runBatches() {
        pool.submit({ [self] conn in
            while true {
                let items: [PendingLookup] = batch.withLock { b in
                    let n = min(b.items.count, IdentityStore.maxBatch)
                    let taken = Array(b.items.prefix(n))
                    b.items.removeFirst(n)
                    if taken.isEmpty { b.running = false }
                    return taken
                }
                if items.isEmpty { return }
                do throws(PGError) {
                    let found = try IdentityStore.lookupMany(Set(items.map(\.credential)), conn).filter { stillValid($0.key, $0.value) }
                    let now = monotonicNanos()
                    let share: [(Credential, Identity)] = cache.withLock { c in
                        var share: [(Credential, Identity)] = []
                        for i in items {
                            if let id = found[i.credential] {
                                var sharedAt = c[i.credential].flatMap { $0.identity == id ? $0.sharedAt : nil } ?? 0
                                if sharedAt == 0 || now - sharedAt > IdentityStore.sharedRefreshNanos {
                                    share.append((i.credential, id))
                                    sharedAt = now
                                }
                                c[i.credential] = Entry(identity: id, checkedAt: now, sharedAt: sharedAt)
                            } else {
                                c[i.credential] = nil
                            }
                        }
                        return share
                    }
                    if let shared {
                        for (c, id) in share { shared.remember(credentialHash: IdentityStore.hash(c), identity: id) }
                    }
                    for i in items {
                        let r: Result<Identity, Failure> = found[i.credential].map { .success($0) } ?? .failure(.invalid)
                        let done = UncheckedBox(i.done)
                        i.loop.execute { done.value(r) }
                    }
                } catch {
                    fallBack(items, error)
                    if error.kind == .connection {
                        // This connection is broken: let the pool reconnect; the rest waits for the next batch.
                        let again = batch.withLock { b in b.running = !b.items.isEmpty; return b.running }
                        if again { runBatches() }
                        return
                    }
                }
            }
        }, unavailable: { [self] error in
            let items: [PendingLookup] = batch.withLock { b in
                let all = b.items
                b.items.removeAll()
                b.running = false
                return all
            }
            fallBack(items, error)
        })
    }

    /// The database could not answer: the fleet's shared cache decides (a credential any node
    /// confirmed within the hour works; a revoked one is refused at once); if that cannot answer
    /// either, this node's own recent answers; anything else waits (503).
    private func fallBack(_ items: [PendingLookup], _ error: PGError) {
        // Once per 5 s at most: during an outage every request comes here.
        let now = monotonicNanos(), last = lastFailureLog.load(ordering: .relaxed)
        if now - last > 5_000_000_000, lastFailureLog.compareExchange(expected: last, desired: now, ordering: .relaxed).exchanged {
            logger.warning("identity lookup failed; answering from the caches", ["error": error.description, "requests": "\(items.count)"])
        }
        guard let shared, !items.isEmpty else { return answerLocally(items) }
        let hashes = Array(Set(items.map { IdentityStore.hash($0.credential) }))
        let box = UncheckedBox(items)
        shared.recall(credentialHashes: hashes) { [self] found in
            guard let found else { return answerLocally(box.value) }
            for i in box.value {
                let r: Result<Identity, Failure>
                switch found[IdentityStore.hash(i.credential)] {
                case .found(let id)?: r = .success(id)
                case .revoked?: r = .failure(.invalid)
                case .absent?, nil: r = localAnswer(i.credential)
                }
                let done = UncheckedBox(i.done)
                i.loop.execute { done.value(r) }
            }
        }
    }

    private func localAnswer(_ c: Credential) -> Result<Identity, Failure> {
        let now = monotonicNanos()
        let stale = cache.withLock { $0[c] }.flatMap { now - $0.checkedAt < IdentityStore.staleTTLNanos ? $0.identity : nil }
        return stale.map { .success($0) } ?? .failure(.unavailable)
    }

    private func answerLocally(_ items: [PendingLookup]) {
        for i in items {
            let r = localAnswer(i.credential)
            let done = UncheckedBox(i.done)
            i.loop.execute { done.value(r) }
        }
    }

    /// One query for all API keys and one for all sessions in the set.
    static func lookupMany(_ credentials: Set<Credential>, _ conn: PGConnection) throws(PGError) -> [Credential: Identity] {
        var keys: [String: Credential] = [:], sessions: [String: Credential] = [:]
        for c in credentials {
            switch c {
            case .apiKey(let k): keys[Credentials.hex(Credentials.sha256(k))] = c
            case .session(let t): sessions[Credentials.hex(Credentials.sha256(t))] = c
            }
        }
        var out: [Credential: Identity] = [:]
        if !keys.isEmpty {
            let rows = try conn.query("""
                SELECT encode(key_hash, 'hex'), id, user_id, org_id FROM api_keys
                WHERE key_hash = ANY (SELECT decode(h, 'hex') FROM unnest($1::text[]) h) AND revoked_at IS NULL
                """, ["{" + keys.keys.joined(separator: ",") + "}"])
            for r in rows.rows {
                if let h = r[0], let c = keys[h], let id = r[1].flatMap(Int64.init), let user = r[2], Identity.nameProblem(user) == nil {
                    out[c] = Identity(userID: user, orgID: r[3], keyID: id)
                }
            }
        }
        if !sessions.isEmpty {
            let rows = try conn.query("""
                SELECT encode(s.token_hash, 'hex'), k.id, k.user_id, k.org_id FROM sessions s JOIN api_keys k ON k.id = s.key_id
                WHERE s.token_hash = ANY (SELECT decode(h, 'hex') FROM unnest($1::text[]) h)
                  AND s.expires_at > now() AND k.revoked_at IS NULL
                """, ["{" + sessions.keys.joined(separator: ",") + "}"])
            for r in rows.rows {
                if let h = r[0], let c = sessions[h], let id = r[1].flatMap(Int64.init), let user = r[2], Identity.nameProblem(user) == nil {
                    out[c] = Identity(userID: user, orgID: r[3], keyID: id)
                }
            }
        }
        return out
    }

    static func lookup(_ credential: Credential, _ conn: PGConnection) throws(PGError) -> Identity? {
        let rows: PGRows
        switch credential {
        case .apiKey(let k):
            rows = try conn.query("SELECT id, user_id, org_id FROM api_keys WHERE key_hash = $1 AND revoked_at IS NULL",
                                  [Credentials.bytea(Credentials.sha256(k))])
        case .session(let t):
            rows = try conn.query("""
                SELECT k.id, k.user_id, k.org_id FROM sessions s JOIN api_keys k ON k.id = s.key_id
                WHERE s.token_hash = $1 AND s.expires_at > now() AND k.revoked_at IS NULL
                """, [Credentials.bytea(Credentials.sha256(t))])
        }
        // A name that breaks the rule (written by hand or an older version) is no identity.
        guard rows.count == 1, let id = rows.rows[0][0].flatMap(Int64.init), let user = rows.rows[0][1], Identity.nameProblem(user) == nil else {
            return nil
        }
        return Identity(userID: user, orgID: rows.rows[0][2], keyID: id)
    }

    /// Trades a valid API key for a new session token (the browser's cookie).
    public func createSession(key: String, on loop: CallbackQueue, done: @escaping (Result<(String, Identity), IdentityFailure>) -> Void) {
        guard Credentials.looksValid(key) else { done(.failure(.invalid)); return }
        let token = Credentials.newSessionToken()
        pool.run(on: loop, { conn throws(PGError) -> Identity? in
            guard let id = try IdentityStore.lookup(.apiKey(key), conn), self.stillValid(.apiKey(key), id) else { return nil }
            try conn.query("INSERT INTO sessions (token_hash, key_id, expires_at) VALUES ($1, $2, now() + make_interval(secs => $3))",
                           [Credentials.bytea(Credentials.sha256(token)), "\(id.keyID)", "\(IdentityStore.sessionLifetimeSeconds)"])
            return id
        }) { r in
            switch r {
            case .success(let id?): done(.success((token, id)))
            case .success(nil): done(.failure(.invalid))
            case .failure: done(.failure(.unavailable))
            }
        }
    }

    /// Ends a session: at once in this node's and the shared cache; in the database now, or (while
    /// it is down) through the replayer, so signing out works during an outage too.
    public func deleteSession(token: String, on loop: CallbackQueue, done: @escaping (Bool) -> Void) {
        cache.withLock { $0[.session(token)] = nil }
        guard Credentials.looksValid(token) else { done(true); return }
        let hash = IdentityStore.hash(.session(token))
        let shared = self.shared
        pool.run(on: loop, { conn throws(PGError) in
            try conn.query("DELETE FROM sessions WHERE token_hash = $1", [Credentials.bytea(Credentials.sha256(token))])
        }) { r in
            let recorded: Bool
            if case .success = r { recorded = true } else { recorded = false }
            guard let shared else { return done(recorded) }
            let d = UncheckedBox(done)
            shared.revoke(.session(tokenHashHex: hash), pending: !recorded) { ok in
                loop.execute { d.value(recorded || ok) }
            }
        }
    }

    // MARK: revocation feed

    /// Starts the LISTEN thread that evicts revoked keys and ended sessions from the cache.
    public func startListening() {
        let ctx = Unmanaged.passRetained(self)
        var t = pthread_t()
        pthread_create(&t, nil, { arg in
            let store = Unmanaged<IdentityStore>.fromOpaque(arg!).takeRetainedValue()
            store.listenLoop()
            return nil
        }, ctx.toOpaque())
        listenerThread = t
    }

    public func stopListening() {
        stopping.store(true, ordering: .releasing)
        if let t = listenerThread { pthread_join(t, nil) }
    }

    private func listenLoop() {
        // Warned at most every 30 s while the database stays away (it retries twice a second).
        var lastWarned: UInt64 = 0
        var failures = 0
        while !stopping.load(ordering: .acquiring) {
            do throws(PGError) {
                let conn = try PGConnection(url: pool.url)
                try conn.query("LISTEN playground_auth")
                lastWarned = 0
                failures = 0
                // Anything cached before we listened may have been revoked meanwhile.
                cache.withLock { $0.removeAll() }
                onRevocation?(.recheckAll)
                while !stopping.load(ordering: .acquiring) {
                    var p = pollfd(fd: conn.socket, events: Int16(POLLIN), revents: 0)
                    let r = poll(&p, 1, 250)
                    if r < 0 && errno != EINTR { break }
                    for (_, payload) in try conn.consumeNotifications() { evict(payload) }
                    if !conn.isHealthy { break }
                }
            } catch {
                failures += 1
                let now = monotonicNanos()
                if lastWarned == 0 || now - lastWarned >= 30_000_000_000 {
                    logger.warning("revocation feed down; identity cache bypassed", ["error": error.message, "attempts": "\(failures)"])
                    lastWarned = now
                    failures = 0
                }
            }
            if !stopping.load(ordering: .acquiring) { usleep(500_000) }
        }
    }

    func evict(_ payload: String) {
        if payload.hasPrefix("key:"), let id = Int64(payload.dropFirst(4)) {
            cache.withLock { c in c = c.filter { $0.value.identity.keyID != id } }
            shared?.revoke(.key(id: id), pending: false) { _ in }
            onRevocation?(.key(id: id))
        } else if payload.hasPrefix("session:") {
            let hash = String(payload.dropFirst(8))
            cache.withLock { c in
                c = c.filter { k, _ in
                    if case .session(let t) = k { return Credentials.hex(Credentials.sha256(t)) != hash }
                    return true
                }
            }
            shared?.revoke(.session(tokenHashHex: hash), pending: false) { _ in }
            onRevocation?(.session(tokenHashHex: hash))
        }
    }

}

/// The admin CLI's key management (blocking; never used on an event loop).
public enum KeyAdmin {
    /// Whether `key` is an API key that is not revoked.
    public static func isLive(_ conn: PGConnection, key: String) throws(PGError) -> Bool {
        guard Credentials.looksValid(key) else { return false }
        return try conn.query("SELECT 1 FROM api_keys WHERE key_hash = $1 AND revoked_at IS NULL",
                              [Credentials.bytea(Credentials.sha256(key))]).count == 1
    }

    public struct KeyInfo: Sendable {
        public let id: Int64, prefix: String, userID: String, orgID: String?, createdAt: String, revokedAt: String?
    }

    public static func create(_ conn: PGConnection, user: String, org: String?) throws(PGError) -> (Int64, String) {
        for (field, name) in [("user", user), ("org", org)] {
            guard let name, let problem = Identity.nameProblem(name) else { continue }
            throw PGError(kind: .invalidInput, sqlState: nil, message: "\(field): \(problem)")
        }
        let key = Credentials.newKey()
        let rows = try conn.query("INSERT INTO api_keys (key_hash, prefix, user_id, org_id) VALUES ($1, $2, $3, $4) RETURNING id",
                                  [Credentials.bytea(Credentials.sha256(key)), String(key.prefix(12)), user, org])
        return (Int64(rows.rows[0][0] ?? "0") ?? 0, key)
    }

    public static func list(_ conn: PGConnection, user: String?) throws(PGError) -> [KeyInfo] {
        let rows = try conn.query("""
            SELECT id, prefix, user_id, org_id, to_char(created_at AT TIME ZONE 'UTC', 'YYYY-MM-DD"T"HH24:MI:SS"Z"'),
                   to_char(revoked_at AT TIME ZONE 'UTC', 'YYYY-MM-DD"T"HH24:MI:SS"Z"')
            FROM api_keys WHERE ($1::text IS NULL OR user_id = $1) ORDER BY id
            """, [user])
        return rows.rows.map { r in
            KeyInfo(id: Int64(r[0] ?? "0") ?? 0, prefix: r[1] ?? "", userID: r[2] ?? "", orgID: r[3], createdAt: r[4] ?? "", revokedAt: r[5])
        }
    }

    /// Revokes by id or by the key's prefix; returns the ids revoked.
    public static func revoke(_ conn: PGConnection, idOrPrefix: String) throws(PGError) -> [Int64] {
        let rows: PGRows
        if let id = Int64(idOrPrefix) {
            rows = try conn.query("UPDATE api_keys SET revoked_at = now() WHERE id = $1 AND revoked_at IS NULL RETURNING id", ["\(id)"])
        } else {
            rows = try conn.query("UPDATE api_keys SET revoked_at = now() WHERE prefix = $1 AND revoked_at IS NULL RETURNING id", [idOrPrefix])
        }
        return rows.rows.compactMap { $0[0].flatMap(Int64.init) }
    }
}
