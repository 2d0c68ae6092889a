// The only file that touches hiredis's async API. A `RedisNodeConnection` lives on one event loop:
// hiredis parses RESP and queues callbacks; the loop owns the socket's readiness, every timeout
// (hiredis 0.14 has none) and reconnection.
internal import CHiredis
import CLinux
import NetCore
import Runtime
import Synchronization
#if canImport(Glibc)
import Glibc
#endif

/// A reply, copied out of hiredis (its reply is valid only inside the callback).
public enum RedisReply: Sendable, Equatable {
    case status(String)
    case error(String)
    case integer(Int64)
    case bulk([UInt8])
    case array([RedisReply])
    case null

    public var string: String? {
        switch self {
        case .bulk(let b): return String(decoding: b, as: UTF8.self)
        case .status(let s): return s
        case .integer(let i): return String(i)
        default: return nil
        }
    }
    public var integer: Int64? {
        switch self {
        case .integer(let i): return i
        case .bulk, .status: return string.flatMap { Int64($0) }
        default: return nil
        }
    }
    public var array: [RedisReply]? { if case .array(let a) = self { return a }; return nil }
    public var isError: Bool { if case .error = self { return true }; return false }

    static func copy(_ r: UnsafePointer<redisReply>) -> RedisReply {
        let reply = r.pointee
        switch reply.type {
        case REDIS_REPLY_STATUS: return .status(String(cString: reply.str))
        case REDIS_REPLY_ERROR: return .error(String(cString: reply.str))
        case REDIS_REPLY_INTEGER: return .integer(Int64(reply.integer))
        case REDIS_REPLY_STRING:
            return .bulk(reply.len == 0 ? [] : Array(UnsafeRawBufferPointer(start: reply.str, count: Int(reply.len))))
        case REDIS_REPLY_ARRAY:
            var out: [RedisReply] = []
            out.reserveCapacity(Int(reply.elements))
            for i in 0..<Int(reply.elements) {
                if let e = reply.element[i] { out.append(copy(e)) } else { out.append(.null) }
            }
            return .array(out)
        default: return .null
        }
    }
}

public enum RedisError: Error, Sendable, Equatable, CustomStringConvertible {
    /// Not connected (down, reconnecting): fail fast.
    case unavailable
    /// No answer within the command's timeout; the connection is dropped and remade.
    case timeout
    /// The connection broke while the command was pending.
    case disconnected
    /// Redis answered with an error (only `BlockingRedis` turns error replies into this).
    case server(String)
    public var description: String {
        switch self {
        case .unavailable: return "redis unavailable"
        case .timeout: return "redis command timed out"
        case .disconnected: return "redis connection lost"
        case .server(let e): return "redis: \(e)"
        }
    }
}

/// One pipelined connection to Redis on one loop. Commands are written at once and answered in
/// order; each has a deadline the loop enforces. While it is down, commands fail at once with
/// `.unavailable` and it reconnects with backoff (50 ms doubling to 2 s). Loop-confined.
public final class RedisNodeConnection: Pollable {
    public let loop: EventLoop
    public let endpoint: RedisEndpoint
    let connectTimeoutNanos: UInt64
    let logger: Logger
    private var context: UnsafeMutablePointer<redisAsyncContext>?
    var contextPointer: UnsafeMutablePointer<redisAsyncContext>? { context }
    /// Called on the loop whenever the connection becomes ready or stops being ready (a cluster
    /// client follows its masters with it).
    var onReadyChange: ((Bool) -> Void)?
    private var registeredFD: Int32 = -1
    private var wantRead = false, wantWrite = false
    /// Whether its first connect failed (it goes on trying); called once, on the loop.
    public private(set) var firstAttemptFailed = false
    var onFirstAttemptFailed: (() -> Void)?
    /// Whether it was ready at least once (a connection still making its first contact, as
    /// opposed to one that lost its server).
    public private(set) var hasBeenReady = false
    public private(set) var isReady = false {
        didSet {
            if isReady { hasBeenReady = true }
            up.store(isReady, ordering: .relaxed)
            if isReady != oldValue { onReadyChange?(isReady) }
        }
    }
    private let up = Atomic<Bool>(false)
    /// `isReady`, readable from any thread (for /readyz).
    public var isUp: Bool { up.load(ordering: .relaxed) }
    private var closed = false
    private var backoffNanos: UInt64 = 50_000_000
    private var connectTimer: TimerHandle?
    /// Pending commands in order; the head is the oldest (its deadline comes first).
    private var pending: [Pending] = []
    private var pendingHead = 0
    private var deadlineTimer: TimerHandle?

    final class Pending {
        let deadline: UInt64
        var done: ((Result<RedisReply, RedisError>) -> Void)?
        unowned let connection: RedisNodeConnection
        init(deadline: UInt64, connection: RedisNodeConnection, done: @escaping (Result<RedisReply, RedisError>) -> Void) {
            self.deadline = deadline
            self.connection = connection
            self.done = done
        }
        func complete(_ r: Result<RedisReply, RedisError>) {
            if case .success(.error(let e)) = r { connection.noteError(e) }
            let d = done
            done = nil
            d?(r)
        }
    }

    /// When Redis last refused a write (out of memory, a failed snapshot, a read-only replica):
    /// it is up but cannot take writes, which /readyz reports.
    private let writesRefusedAt = Atomic<UInt64>(0)

    func noteError(_ e: String) {
        if Self.refusesWrites(e, readOnlyCounts: true) {
            writesRefusedAt.store(monotonicNanos() | 1, ordering: .relaxed)
        }
    }

    /// An error reply that says Redis is up but takes no writes (out of memory, a failed snapshot,
    /// too few replicas; a read-only replica unless a cluster's failover explains it).
    static func refusesWrites(_ e: String, readOnlyCounts: Bool) -> Bool {
        e.hasPrefix("OOM") || e.hasPrefix("MISCONF") || e.hasPrefix("NOREPLICAS") || (readOnlyCounts && e.hasPrefix("READONLY"))
    }

    /// Whether Redis refused a write in the last `withinNanos` (any thread).
    public func refusedWritesRecently(withinNanos: UInt64 = 5_000_000_000) -> Bool {
        let at = writesRefusedAt.load(ordering: .relaxed)
        return at != 0 && monotonicNanos() &- at < withinNanos
    }

    public init(endpoint: RedisEndpoint, loop: EventLoop, connectTimeoutNanos: UInt64 = 1_000_000_000, logger: Logger) {
        self.endpoint = endpoint
        self.loop = loop
        self.connectTimeoutNanos = connectTimeoutNanos
        self.logger = logger
    }

    /// Starts connecting (loop thread).
    public func start() { connect() }

    /// Closes for good (loop thread): pending commands fail with `.disconnected`.
    public func close() {
        closed = true
        connectTimer?.cancel()
        drop()
        failAll(.disconnected)
    }

    /// Sends one command. `done` runs on the loop, exactly once: the reply (a Redis error is a
    /// `.error` reply, not a failure), or why there is none.
    public func send(_ args: [String], timeoutNanos: UInt64, done: @escaping (Result<RedisReply, RedisError>) -> Void) {
        guard isReady, let c = context else { return done(.failure(.unavailable)) }
        let p = Pending(deadline: loop.now &+ timeoutNanos, connection: self, done: done)
        guard RedisNodeConnection.write(c, args, p) else { return done(.failure(.disconnected)) }
        pending.append(p)
        armDeadline(p.deadline)
    }

    /// Writes a command into hiredis's output buffer; the callback owns a retained `Pending`.
    private static func write(_ c: UnsafeMutablePointer<redisAsyncContext>, _ args: [String], _ p: Pending) -> Bool {
        // Binary-safe: each argument is copied with its length (hiredis copies them again).
        var lengths = args.map { $0.utf8.count }
        let copies: [UnsafeMutablePointer<CChar>] = args.map { a in
            let n = a.utf8.count
            let buf = UnsafeMutablePointer<CChar>.allocate(capacity: max(n, 1))
            var s = a
            s.withUTF8 { u in if let base = u.baseAddress { UnsafeMutableRawPointer(buf).copyMemory(from: base, byteCount: n) } }
            return buf
        }
        defer { for b in copies { b.deallocate() } }
        let priv = Unmanaged.passRetained(p).toOpaque()
        var argv: [UnsafePointer<CChar>?] = copies.map { UnsafePointer($0) }
        let rc = argv.withUnsafeMutableBufferPointer { buf in
                redisAsyncCommandArgv(c, { _, reply, priv in
                    let p = Unmanaged<Pending>.fromOpaque(priv!).takeRetainedValue()
                    if let r = reply?.assumingMemoryBound(to: redisReply.self) {
                        p.complete(.success(RedisReply.copy(r)))
                    } else {
                        p.complete(.failure(.disconnected))  // the link died or the context was freed
                    }
                }, priv, Int32(args.count), buf.baseAddress, &lengths)
        }
        if rc != REDIS_OK {
            Unmanaged<Pending>.fromOpaque(priv).release()
            return false
        }
        return true
    }

    // MARK: connecting

    private func connect() {
        guard !closed, context == nil else { return }
        guard let c = redisAsyncConnect(endpoint.host, Int32(endpoint.port)) else { return scheduleReconnect() }
        if chiredis_err(c) != 0 {
            logger.debug("redis connect failed", ["error": String(cString: chiredis_errstr(c))])
            redisAsyncFree(c)
            return scheduleReconnect()
        }
        context = c
        // Hooks first, then the callbacks (hiredis may call addWrite at once for the connect).
        let me = Unmanaged.passUnretained(self).toOpaque()
        chiredis_set_data(c, me)
        chiredis_attach(c, me, { RedisNodeConnection.from($0)?.setInterest(read: true) },
                        { RedisNodeConnection.from($0)?.setInterest(read: false) },
                        { RedisNodeConnection.from($0)?.wantsToWrite() },
                        { RedisNodeConnection.from($0)?.setInterest(write: false) },
                        { RedisNodeConnection.from($0)?.cleanup() })
        redisAsyncSetConnectCallback(c) { ac, status in
            guard let ac, let me = chiredis_data(ac) else { return }
            Unmanaged<RedisNodeConnection>.fromOpaque(me).takeUnretainedValue().connected(status == REDIS_OK)
        }
        redisAsyncSetDisconnectCallback(c) { ac, status in
            guard let ac, let me = chiredis_data(ac) else { return }
            Unmanaged<RedisNodeConnection>.fromOpaque(me).takeUnretainedValue().disconnected()
        }
        connectTimer = loop.schedule(afterNanos: connectTimeoutNanos) { [weak self] in
            guard let self, !self.isReady, let c = self.context else { return }
            _ = c
            self.logger.debug("redis connect timed out", [:])
            self.drop()
        }
    }

    static func from(_ p: UnsafeMutableRawPointer?) -> RedisNodeConnection? {
        p.map { Unmanaged<RedisNodeConnection>.fromOpaque($0).takeUnretainedValue() }
    }

    private func connected(_ ok: Bool) {
        connectTimer?.cancel()
        linkUp = ok
        guard ok else {
            // hiredis frees the context after this returns and, since it never connected, does
            // not call the disconnect callback: forget it here and try again later.
            context = nil
            failAll(.disconnected)
            scheduleReconnect()
            return
        }
        // AUTH and SELECT go first on the wire; commands wait for them (isReady stays false).
        var setup: [[String]] = []
        if let pw = endpoint.password { setup.append(["AUTH", pw]) }
        if endpoint.db != 0 { setup.append(["SELECT", "\(endpoint.db)"]) }
        setup.append(["PING"])  // proves the link
        var left = setup.count
        var failed = false
        for cmd in setup {
            let p = Pending(deadline: loop.now &+ connectTimeoutNanos, connection: self) { [weak self] r in
                guard let self else { return }
                left -= 1
                if case .success(let reply) = r, !reply.isError {} else if !failed {
                    failed = true
                    self.logger.warning("redis setup failed", ["command": cmd[0], "reply": "\(r)"])
                }
                if left == 0 && !failed {
                    self.isReady = true
                    self.backoffNanos = 50_000_000
                    self.logger.info("redis connected", ["endpoint": self.endpoint.masked])
                } else if left == 0, let c = self.context {
                    redisAsyncDisconnect(c)
                }
            }
            guard let c = context, RedisNodeConnection.write(c, cmd, p) else { return }
            pending.append(p)
        }
        armDeadline()
    }

    private func disconnected() {
        // hiredis frees the context after this returns; pending callbacks already got NULL replies.
        let wasReady = isReady
        isReady = false
        context = nil
        connectTimer?.cancel()
        failAll(.disconnected)
        if wasReady { logger.warning("redis connection lost; reconnecting", ["endpoint": endpoint.masked]) }
        scheduleReconnect()
    }

    /// Frees the context now (never from inside a hiredis callback): a Redis that stopped
    /// answering would hold a graceful disconnect forever. Then reconnects.
    private func drop() {
        guard let c = context else { return }
        isReady = false
        redisAsyncFree(c)  // calls `disconnected` if the link was up
        if context != nil {
            context = nil
            failAll(.disconnected)
            scheduleReconnect()
        }
    }

    private func scheduleReconnect() {
        if !hasBeenReady && !firstAttemptFailed {
            firstAttemptFailed = true
            onFirstAttemptFailed?()
        }
        guard !closed else { return }
        let delay = backoffNanos
        backoffNanos = min(backoffNanos * 2, 2_000_000_000)
        _ = loop.schedule(afterNanos: delay) { [weak self] in self?.connect() }
    }

    // MARK: deadlines

    private var deadlineArmedAt: UInt64 = .max

    /// One timer for all pending commands, at the earliest deadline.
    private func armDeadline(_ at: UInt64? = nil) {
        while pendingHead < pending.count, pending[pendingHead].done == nil { pendingHead += 1 }
        if pendingHead > 256 && pendingHead * 2 > pending.count {
            pending.removeFirst(pendingHead)
            pendingHead = 0
        }
        guard pendingHead < pending.count else { return }
        let next = at ?? pending[pendingHead...].lazy.filter { $0.done != nil }.map(\.deadline).min() ?? .max
        guard next < deadlineArmedAt else { return }
        deadlineTimer?.cancel()
        deadlineArmedAt = next
        deadlineTimer = loop.schedule(atNanos: next) { [weak self] in
            guard let self else { return }
            self.deadlineTimer = nil
            self.deadlineArmedAt = .max
            self.checkDeadlines()
        }
    }

    /// Any overdue command fails with `.timeout`, and so does everything behind it, and the
    /// connection is remade: replies come in order, so a Redis that stopped answering one command
    /// holds every later one hostage.
    private func checkDeadlines() {
        let now = monotonicNanos()
        if pending[pendingHead...].contains(where: { $0.done != nil && $0.deadline <= now }) {
            logger.warning("redis command timed out; reconnecting", ["endpoint": endpoint.masked])
            failAll(.timeout)
            drop()
            return
        }
        armDeadline()
    }

    private func failAll(_ e: RedisError) {
        let all = pending[pendingHead...]
        pending.removeAll()
        pendingHead = 0
        deadlineTimer?.cancel()
        deadlineTimer = nil
        deadlineArmedAt = .max
        for p in all { p.complete(.failure(e)) }
    }

    // MARK: the hooks (hiredis asks; the loop does)

    /// hiredis has output. Once connected, it is written at the end of this loop iteration (every
    /// command queued in the iteration goes out in one write, with no epoll change); only output
    /// the socket cannot take at once waits for EPOLLOUT.
    private func wantsToWrite() {
        guard linkUp, !flushing else { return setInterest(write: true) }
        guard !flushQueued else { return }
        flushQueued = true
        loop.runAfterTick { [weak self] in
            guard let self else { return }
            self.flushQueued = false
            guard let c = self.context else { return }
            self.flushing = true
            redisAsyncHandleWrite(c)  // calls addWrite again (EPOLLOUT) if not everything went out
            self.flushing = false
        }
    }

    private var flushQueued = false
    private var flushing = false
    /// The socket is connected (hiredis's connect callback ran): writes no longer need EPOLLOUT.
    private var linkUp = false

    private func setInterest(read: Bool? = nil, write: Bool? = nil) {
        guard let c = context else { return }
        let fd = chiredis_fd(c)
        // hiredis asks again and again (addRead after every write): change epoll only on a change.
        if registeredFD == fd && (read ?? wantRead) == wantRead && (write ?? wantWrite) == wantWrite { return }
        if let read { wantRead = read }
        if let write { wantWrite = write }
        var ev: UInt32 = 0
        if wantRead { ev |= EPOLLIN.rawValue }
        if wantWrite { ev |= EPOLLOUT.rawValue }
        if registeredFD != fd {
            if registeredFD >= 0 { loop.deregister(fd: registeredFD) }
            try? loop.register(fd: fd, self, events: ev)
            registeredFD = fd
        } else {
            try? loop.modify(fd: fd, events: ev)
        }
    }

    private func cleanup() {
        linkUp = false
        if registeredFD >= 0 { loop.deregister(fd: registeredFD) }
        registeredFD = -1
        wantRead = false
        wantWrite = false
    }

    public func handleEvents(_ events: UInt32) {
        guard let c = context else { return }
        if events & (EPOLLIN.rawValue | EPOLLERR.rawValue | EPOLLHUP.rawValue) != 0 {
            // The replies of one read (a burst of relayed tokens) write to each client once.
            loop.deferringWrites { redisAsyncHandleRead(c) }
        }
        // The read may have freed the context (a disconnect).
        if events & EPOLLOUT.rawValue != 0, let c = context { redisAsyncHandleWrite(c) }
    }
}
