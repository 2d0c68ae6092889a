import Domain
import Runtime
import Synchronization
#if canImport(Glibc)
import Glibc
#endif

/// Drains the outbox into the database once it is back: every node runs one, a per-user lease
/// lets one node at a time replay a user (so a user's writes apply in the order they were
/// accepted), and each write is applied exactly once (`PresetRepository.applyQueued`). It also
/// records revocations made while the database was down. Runs on its own thread, blocking calls
/// only (a few queries a second, and nothing on the event loops).
public final class OutboxReplayer: @unchecked Sendable {
    public struct Counters: Sendable {
        public var applied = 0
        public var duplicates = 0
        public var failed = 0
        public var revocations = 0
    }

    let pool: PGPool
    let makeDrain: () throws -> OutboxDrain
    let owner: String
    let logger: Logger
    let intervalMs: Int
    private let stopping = Atomic<Bool>(false)
    private let counters = Mutex(Counters())
    private var thread: pthread_t?
    private var drain: OutboxDrain?
    private var lastPrune: UInt64 = 0
    /// Told after each write it settles (for metrics).
    public var onSettled: (@Sendable (PresetRepository.QueuedOutcome) -> Void)?
    /// Told on every pass (database up or not) of the revocations made while the database was
    /// down and not yet recorded in it: until they are, a database answer must not override them.
    public var onPendingRevocations: (@Sendable ([Revocation]) -> Void)?

    public init(pool: PGPool, owner: String, intervalMs: Int = 250, logger: Logger, makeDrain: @escaping () throws -> OutboxDrain) {
        self.pool = pool
        self.owner = owner
        self.intervalMs = intervalMs
        self.logger = logger
        self.makeDrain = makeDrain
    }

    public var totals: Counters { counters.withLock { $0 } }

    public func start() {
        let ctx = Unmanaged.passRetained(self)
        var t = pthread_t()
        pthread_create(&t, nil, { arg in
            let me = Unmanaged<OutboxReplayer>.fromOpaque(arg!).takeRetainedValue()
            me.run()
            return nil
        }, ctx.toOpaque())
        thread = t
    }

    public func stop() {
        stopping.store(true, ordering: .releasing)
        if let t = thread { pthread_join(t, nil) }
        thread = nil
    }

    private func run() {
        while !stopping.load(ordering: .acquiring) {
            if pool.healthyConnections > 0 { _ = replayOnce() } else { refreshPendingRevocations() }
            var left = intervalMs
            while left > 0 && !stopping.load(ordering: .acquiring) { usleep(50_000); left -= 50 }
        }
    }

    /// One pass over every user with writes waiting; how many writes it settled. Public for tests
    /// and the benchmark (which drive it without the thread).
    @discardableResult
    public func replayOnce() -> Int {
        do {
            if drain == nil { drain = try makeDrain() }
            guard let drain else { return 0 }
            try recordRevocations(drain)
            var settled = 0
            for user in try drain.usersWithWrites() where !stopping.load(ordering: .acquiring) {
                guard try drain.lock(user: user, owner: owner, ttlMs: 30_000) else { continue }
                defer { try? drain.unlock(user: user, owner: owner) }
                settled += try replay(user: user, drain)
            }
            if monotonicNanos() - lastPrune > 3_600_000_000_000 {
                lastPrune = monotonicNanos()
                _ = try? pool.runBlocking { conn throws(PGError) in try PresetRepository.pruneAppliedWrites(conn) }
            }
            return settled
        } catch let e as PGError {
            warn("outbox replay paused: database unavailable", e.description)
        } catch {
            // The drain's connection reconnects by itself; keep it.
            warn("outbox replay paused: Redis unavailable", "\(error)")
        }
        return 0
    }

    private var lastWarning: UInt64 = 0

    /// At most one warning per 30 s: a pass runs four times a second.
    private func warn(_ message: String, _ error: String) {
        let now = monotonicNanos()
        guard lastWarning == 0 || now - lastWarning > 30_000_000_000 else { return }
        lastWarning = now
        logger.warning(message, ["error": error])
    }

    /// A user's writes in order until none is left. Stops (throws) at the first one the database
    /// could not take: the rest wait behind it, so order is kept.
    private func replay(user: String, _ drain: OutboxDrain) throws -> Int {
        var settled = 0
        while !stopping.load(ordering: .acquiring) {
            let batch = try drain.writes(user: user, count: 100)
            if batch.isEmpty {
                try drain.finish(user: user)
                return settled
            }
            for (entry, write) in batch {
                guard let write, UUIDText.isValid(write.key), UUIDText.isValid(write.presetID), Timestamps.micros(write.queuedAt) != nil else {
                    // Not something this version wrote: set aside (kept in Redis, logged), so the
                    // user's other writes are not stuck behind it.
                    logger.error("outbox entry cannot be read; set aside", ["user": user, "entry": entry])
                    try drain.bury(user: user, entry: entry)
                    continue
                }
                let outcome = try pool.runBlocking { conn throws(PGError) in try PresetRepository.applyQueued(conn, write) }
                switch outcome {
                case .applied(let p):
                    try drain.settle(user: user, presetID: write.presetID, applied: p)
                    counters.withLock { $0.applied += 1 }
                case .duplicate:
                    try drain.settle(user: user, presetID: write.presetID, applied: nil)
                    counters.withLock { $0.duplicates += 1 }
                case .failed(let code, let message):
                    try drain.settle(user: user, presetID: write.presetID, applied: nil)
                    counters.withLock { $0.failed += 1 }
                    logger.warning("queued preset write could not be applied", ["user": user, "op": write.op.rawValue, "code": code, "message": message])
                }
                try drain.acknowledge(user: user, entry: entry)
                onSettled?(outcome)
                settled += 1
            }
        }
        return settled
    }

    private func refreshPendingRevocations() {
        do {
            if drain == nil { drain = try makeDrain() }
            if let drain { onPendingRevocations?(try drain.pendingRevocations()) }
        } catch {
            warn("revocations waiting for the database could not be read from Redis", "\(error)")
        }
    }

    private func recordRevocations(_ drain: OutboxDrain) throws {
        let pending = try drain.pendingRevocations()
        onPendingRevocations?(pending)
        for r in pending {
            let result: Result<Void, PGError> = runRecording(r)
            if case .failure(let e) = result {
                if e.isUnavailable { throw e }
                logger.error("revocation could not be recorded; dropped", ["error": e.description])
            }
            try drain.revocationRecorded(r)
            counters.withLock { $0.revocations += 1 }
        }
    }

    private func runRecording(_ r: Revocation) -> Result<Void, PGError> {
        do throws(PGError) {
            try pool.runBlocking { conn throws(PGError) in try OutboxReplayer.record(r, conn) }
            return .success(())
        } catch {
            return .failure(error)
        }
    }

    static func record(_ r: Revocation, _ conn: PGConnection) throws(PGError) {
        switch r {
        case .key(let id): try conn.query("UPDATE api_keys SET revoked_at = now() WHERE id = $1 AND revoked_at IS NULL", ["\(id)"])
        case .session(let h): try conn.query("DELETE FROM sessions WHERE token_hash = decode($1, 'hex')", [h])
        case .recheckAll: break
        }
    }
}
