import NetCore
import Runtime
import Synchronization
#if canImport(Glibc)
import Glibc
#endif

/// A bounded pool of PostgreSQL connections, each owned by its own thread, so a query never
/// blocks an event loop: a loop hands work to the pool and gets the result back on itself.
///
/// Why threads and not non-blocking libpq on the loops: queries here are short and few per
/// request; a small thread pool keeps libpq's blocking API (simple, well-trodden error handling),
/// bounds database connections independently of the number of loops, and costs one hand-off each
/// way (~10 µs) — measured in docs/BENCHMARKS.md.
///
/// Health: a thread whose connection breaks reconnects with backoff before it takes more work;
/// while no connection is up, work fails at once with `.unavailable` instead of queueing behind a
/// dead database. The queue is bounded; past it, work fails at once too.
public final class PGPool: @unchecked Sendable {
    public let url: String
    public let size: Int
    public let maxQueue: Int
    let logger: Logger

    private struct Work: @unchecked Sendable {
        let body: (PGConnection) -> Void
        let onUnavailable: (PGError) -> Void
        var queuedAt: UInt64 = 0
    }
    private struct State {
        var queue: [Work] = []
        var head = 0
        var healthy = 0
        var stopping = false
    }
    private let state = Mutex(State())
    private let available = CountingSemaphore()
    private var threads: [pthread_t] = []

    /// How long work may wait for a connection before it is refused.
    public let maxWaitNanos: UInt64

    public init(url: String, size: Int = 4, maxQueue: Int = 1024, maxWaitMs: Int = 2000, logger: Logger) {
        self.url = url
        self.maxWaitNanos = UInt64(maxWaitMs) * 1_000_000
        self.size = max(1, size)
        self.maxQueue = maxQueue
        self.logger = logger
    }

    /// Starts the threads; returns once each has tried to connect.
    public func start() {
        let started = CountingSemaphore()
        for i in 0..<size {
            let ctx = Unmanaged.passRetained(ThreadContext(pool: self, index: i, started: started))
            var t = pthread_t()
            pthread_create(&t, nil, { arg in
                let c = Unmanaged<ThreadContext>.fromOpaque(arg!).takeRetainedValue()
                c.pool.threadMain(c.index, c.started)
                return nil
            }, ctx.toOpaque())
            threads.append(t)
        }
        for _ in 0..<size { started.wait() }
    }

    public var healthyConnections: Int { state.withLock { $0.healthy } }

    /// Runs `body` on a pool thread; `done` runs on `loop` (an event loop) with its result.
    public func run<T: Sendable>(on loop: CallbackQueue, _ body: @escaping @Sendable (PGConnection) throws(PGError) -> T,
                                 done: @escaping (Result<T, PGError>) -> Void) {
        let d = UncheckedBox(done)
        let work = Work(body: { conn in
            let r: Result<T, PGError>
            do throws(PGError) { r = .success(try body(conn)) } catch { r = .failure(error) }
            loop.execute { d.value(r) }
        }, onUnavailable: { e in loop.execute { d.value(.failure(e)) } })
        enqueue(work)
    }

    /// Runs `body` on a pool thread, or `unavailable` at once if no connection can take it.
    /// For callers that fan results out themselves (batched identity lookups).
    public func submit(_ body: @escaping (PGConnection) -> Void, unavailable: @escaping (PGError) -> Void) {
        enqueue(Work(body: body, onUnavailable: unavailable))
    }

    /// Blocking variant for CLI commands (never call it on an event loop).
    public func runBlocking<T: Sendable>(_ body: @escaping @Sendable (PGConnection) throws(PGError) -> T) throws(PGError) -> T {
        let box = Mutex<Result<T, PGError>?>(nil)
        let done = CountingSemaphore()
        enqueue(Work(body: { conn in
            let r: Result<T, PGError>
            do throws(PGError) { r = .success(try body(conn)) } catch { r = .failure(error) }
            box.withLock { $0 = r }
            done.signal()
        }, onUnavailable: { e in box.withLock { $0 = .failure(e) }; done.signal() }))
        done.wait()
        return try box.withLock { $0! }.get()
    }

    private func enqueue(_ work: Work) {
        var work = work
        work.queuedAt = monotonicNanos()
        let refused: PGError? = state.withLock { s in
            if s.healthy == 0 { return PGError(kind: .unavailable, sqlState: nil, message: "database unavailable") }
            if s.queue.count - s.head >= maxQueue { return PGError(kind: .unavailable, sqlState: nil, message: "database queue full") }
            s.queue.append(work)
            return nil
        }
        if let refused { work.onUnavailable(refused); return }
        available.signal()
    }

    public func stop() {
        state.withLock { $0.stopping = true }
        for _ in threads { available.signal() }
        for t in threads { pthread_join(t, nil) }
        threads.removeAll()
    }

    final class ThreadContext {
        let pool: PGPool
        let index: Int
        let started: CountingSemaphore
        init(pool: PGPool, index: Int, started: CountingSemaphore) { self.pool = pool; self.index = index; self.started = started }
    }

    private func threadMain(_ index: Int, _ started: CountingSemaphore) {
        var conn: PGConnection? = connect(index)
        started.signal()
        var backoffMs: UInt32 = 100
        while true {
            if conn == nil || !(conn!.isHealthy) {
                if conn != nil { markHealthy(false); conn = nil }
                conn = connect(index)
                if conn == nil {
                    if state.withLock({ $0.stopping }) { return }
                    usleep(backoffMs * 1000)
                    backoffMs = min(backoffMs * 2, 5000)
                    continue
                }
                backoffMs = 100
            }
            available.wait()
            let work: Work? = state.withLock { s in
                guard s.head < s.queue.count else { return nil }
                let w = s.queue[s.head]
                s.head += 1
                if s.head > 256 && s.head * 2 > s.queue.count { s.queue.removeFirst(s.head); s.head = 0 }
                return w
            }
            guard let work else {
                if state.withLock({ $0.stopping }) { if conn != nil { markHealthy(false) }; return }
                continue
            }
            // Work that waited longer than a caller would (every connection busy or stuck) is
            // answered "unavailable" now, so callers fall back instead of queueing behind a
            // database that stopped answering.
            if monotonicNanos() - work.queuedAt > maxWaitNanos {
                work.onUnavailable(PGError(kind: .unavailable, sqlState: nil, message: "database too slow to answer"))
                continue
            }
            work.body(conn!)
        }
    }

    private func connect(_ index: Int) -> PGConnection? {
        do throws(PGError) {
            let c = try PGConnection(url: url)
            try c.query("SET statement_timeout = '2500ms'")
            // Preset search: a word matches when at least 40% of its trigrams line up ("frnch" ≈ "french").
            try c.query("SET pg_trgm.word_similarity_threshold = 0.4")
            markHealthy(true)
            return c
        } catch {
            logger.warning("database connection failed", ["thread": "\(index)", "error": error.message])
            return nil
        }
    }

    private func markHealthy(_ up: Bool) {
        let failed: [Work] = state.withLock { s in
            s.healthy += up ? 1 : -1
            guard s.healthy == 0 else { return [] }
            // Nobody can serve what is queued: fail it now rather than let it wait for a reconnect.
            let rest = Array(s.queue[s.head...])
            s.queue.removeAll()
            s.head = 0
            return rest
        }
        for w in failed { w.onUnavailable(PGError(kind: .unavailable, sqlState: nil, message: "database connection lost")) }
    }
}

/// A counting semaphore on a mutex + futex-free condition (pthread), for the pool's threads.
final class CountingSemaphore: @unchecked Sendable {
    private var mutex = pthread_mutex_t()
    private var cond = pthread_cond_t()
    private var count = 0
    init() {
        pthread_mutex_init(&mutex, nil)
        pthread_cond_init(&cond, nil)
    }
    deinit {
        pthread_cond_destroy(&cond)
        pthread_mutex_destroy(&mutex)
    }
    func signal() {
        pthread_mutex_lock(&mutex)
        count += 1
        pthread_cond_signal(&cond)
        pthread_mutex_unlock(&mutex)
    }
    func wait() {
        pthread_mutex_lock(&mutex)
        while count == 0 { pthread_cond_wait(&cond, &mutex) }
        count -= 1
        pthread_mutex_unlock(&mutex)
    }
}
