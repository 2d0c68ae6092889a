import NetCore
import Runtime
import Synchronization

/// Redis as the rest of the product sees it, on one loop: one server (one pipelined connection),
/// or a Redis Cluster — a connection per master, each command sent to the master of its key's
/// slot, `MOVED` followed (and the slot map refreshed), `ASK` followed once with `ASKING`,
/// `TRYAGAIN`/`CLUSTERDOWN`/`READONLY` retried with a short backoff inside the command's own
/// deadline. A master that goes away fails its commands at once (`.unavailable`: callers follow
/// the Redis-down policy) while the map is asked for every 250 ms until a replica took over.
/// Loop-confined, except `isUp` and `refusedWritesRecently`.
public final class RedisClient {
    public let loop: EventLoop
    public let endpoint: RedisEndpoint
    let logger: Logger
    let connectTimeoutNanos: UInt64
    private let single: RedisNodeConnection?

    // A cluster's state.
    private var map = ClusterSlots.Map()
    private var nodes: [ClusterSlots.Node: RedisNodeConnection] = [:]
    private var refreshing = false
    private var refreshTimer: TimerHandle?
    private var refreshAt: UInt64 = .max
    private var lastRefreshAt: UInt64 = 0
    private var refreshTurn = 0
    private var degradedRefreshes = 0
    private var closed = false
    private let up = Atomic<Bool>(false)
    private let writesRefusedAt = Atomic<UInt64>(0)
    private var mapObservers: [() -> Void] = []

    /// How often the slot map is asked for while all is well, and while a master is missing.
    static let steadyRefreshNanos: UInt64 = 5_000_000_000
    static let degradedRefreshNanos: UInt64 = 250_000_000
    /// Redirections and retries one command may go through.
    static let maxAttempts = 6

    public init(endpoint: RedisEndpoint, loop: EventLoop, connectTimeoutNanos: UInt64 = 1_000_000_000, logger: Logger) {
        self.endpoint = endpoint
        self.loop = loop
        self.logger = logger
        self.connectTimeoutNanos = connectTimeoutNanos
        single = endpoint.isCluster ? nil : RedisNodeConnection(endpoint: endpoint, loop: loop, connectTimeoutNanos: connectTimeoutNanos, logger: logger)
    }

    public var isCluster: Bool { single == nil }

    /// Starts connecting (loop thread).
    public func start() {
        if let single { return single.start() }
        for seed in endpoint.seeds { connection(to: seed) }
    }

    /// Closes for good (loop thread): pending commands fail with `.disconnected`.
    public func close() {
        if let single { return single.close() }
        closed = true
        refreshTimer?.cancel()
        for c in nodes.values { c.close() }
        nodes = [:]
        let waiting = waiters.values.flatMap { $0 }
        waiters = [:]
        for body in waiting { body() }  // closed: each fails
        up.store(false, ordering: .relaxed)
    }

    /// Connected (loop thread). On a cluster: the slot map is known and some master answers (a
    /// master that is down fails only the commands for its slots).
    public var isReady: Bool { single?.isReady ?? up.load(ordering: .relaxed) }
    /// `isReady`, from any thread (for /readyz).
    public var isUp: Bool { single?.isUp ?? up.load(ordering: .relaxed) }

    /// Whether Redis refused a write in the last `withinNanos` (any thread).
    public func refusedWritesRecently(withinNanos: UInt64 = 5_000_000_000) -> Bool {
        if let single { return single.refusedWritesRecently(withinNanos: withinNanos) }
        let at = writesRefusedAt.load(ordering: .relaxed)
        return at != 0 && monotonicNanos() &- at < withinNanos
    }

    /// Sends one command. `done` runs on the loop, exactly once: the reply (a Redis error is a
    /// `.error` reply, not a failure), or why there is none.
    public func send(_ args: [String], timeoutNanos: UInt64, done: @escaping (Result<RedisReply, RedisError>) -> Void) {
        if let single { return single.send(args, timeoutNanos: timeoutNanos, done: done) }
        route(args, deadline: loop.now &+ timeoutNanos, target: nil, asking: false, attempt: 0, done: done)
    }

    // MARK: the slot map

    /// The master serving `key`'s slot (loop thread); on one server, that server.
    public func master(forKey key: String) -> ClusterSlots.Node? {
        if single != nil { return ClusterSlots.Node(host: endpoint.host, port: endpoint.port) }
        return map.master(forKey: key)
    }

    /// Every master (loop thread); on one server, that server.
    public var masters: [ClusterSlots.Node] {
        single != nil ? [ClusterSlots.Node(host: endpoint.host, port: endpoint.port)] : map.masters
    }

    /// Calls `body` on the loop after every change of the slot map (loop thread).
    public func whenMapChanges(_ body: @escaping () -> Void) { mapObservers.append(body) }

    /// Sends one command to one node (a keyless command that must reach every master: SCAN).
    public func send(_ args: [String], to node: ClusterSlots.Node, timeoutNanos: UInt64,
                     done: @escaping (Result<RedisReply, RedisError>) -> Void) {
        if let single { return single.send(args, timeoutNanos: timeoutNanos, done: done) }
        route(args, deadline: loop.now &+ timeoutNanos, target: node, asking: false, attempt: 0, done: done)
    }

    /// The map is asked for again soon (never more than every 100 ms).
    public func refreshMapSoon() {
        guard single == nil else { return }
        scheduleRefresh(at: max(loop.now, lastRefreshAt &+ 100_000_000))
    }

    @discardableResult
    private func connection(to node: ClusterSlots.Node) -> RedisNodeConnection {
        if let c = nodes[node] { return c }
        let c = RedisNodeConnection(endpoint: endpoint.node(node), loop: loop, connectTimeoutNanos: connectTimeoutNanos, logger: logger)
        c.onReadyChange = { [weak self] ready in self?.nodeReadyChanged(node, ready: ready) }
        c.onFirstAttemptFailed = { [weak self] in self?.wakeWaiters(node) }
        nodes[node] = c
        if !closed { c.start() }
        return c
    }

    /// Commands waiting for a node's first connect, by node.
    private var waiters: [ClusterSlots.Node: [() -> Void]] = [:]

    private func wakeWaiters(_ node: ClusterSlots.Node) {
        guard let w = waiters.removeValue(forKey: node) else { return }
        for body in w { body() }
    }

    private func nodeReadyChanged(_ node: ClusterSlots.Node, ready: Bool) {
        if ready { wakeWaiters(node) }
        updateUp()
        // The first node up gives the map; a master lost may be failing over.
        if ready ? map.ranges.isEmpty : map.masters.contains(node) { refreshMapSoon() }
    }

    private func updateUp() {
        up.store(!map.ranges.isEmpty && map.masters.contains { nodes[$0]?.isReady == true }, ordering: .relaxed)
    }

    /// A master without a connection up, or slots without a master.
    private var degraded: Bool { !map.coversAllSlots || map.masters.contains { nodes[$0]?.isReady != true } }

    private func scheduleRefresh(at: UInt64) {
        guard !closed, at < refreshAt else { return }
        refreshTimer?.cancel()
        refreshAt = at
        refreshTimer = loop.schedule(atNanos: at) { [weak self] in
            guard let self else { return }
            self.refreshAt = .max
            self.refreshTimer = nil
            self.refresh()
        }
    }

    /// Asks one node that answers (taking turns) for `CLUSTER SLOTS`.
    private func refresh() {
        guard !closed, !refreshing else { return }
        let ready = nodes.filter { $0.value.isReady }.sorted { ($0.key.host, $0.key.port) < ($1.key.host, $1.key.port) }
        guard !ready.isEmpty else {
            // Every connection reconnects by itself; ask again once one is back.
            return scheduleRefresh(at: loop.now &+ RedisClient.degradedRefreshNanos)
        }
        let source = ready[refreshTurn % ready.count]
        refreshTurn &+= 1
        refreshing = true
        lastRefreshAt = loop.now
        source.value.send(["CLUSTER", "SLOTS"], timeoutNanos: connectTimeoutNanos) { [weak self] r in
            guard let self else { return }
            self.refreshing = false
            if case .success(let reply) = r, let m = ClusterSlots.Map(clusterSlots: reply), !m.ranges.isEmpty {
                self.apply(m)
            } else {
                self.logger.warning("redis cluster map unreadable", ["from": "\(source.key.host):\(source.key.port)", "reply": "\(r)"])
            }
            // Degraded: every 250 ms at first (a failover takes seconds), every 2 s once it has
            // lasted a minute (a master with no replica that stays down).
            if self.degraded { self.degradedRefreshes += 1 } else { self.degradedRefreshes = 0 }
            let every = !self.degraded ? RedisClient.steadyRefreshNanos
                : self.degradedRefreshes > 240 ? 2_000_000_000 : RedisClient.degradedRefreshNanos
            self.scheduleRefresh(at: self.loop.now &+ every)
        }
    }

    private func apply(_ m: ClusterSlots.Map) {
        let changed = m != map
        map = m
        let masters = Set(m.masters)
        for master in masters { connection(to: master) }
        // Connections to nodes that serve nothing now (a demoted master, a removed node) go.
        for (node, c) in nodes where !masters.contains(node) && !endpoint.seeds.contains(node) {
            c.close()
            nodes[node] = nil
        }
        updateUp()
        guard changed else { return }
        logger.info("redis cluster map", ["masters": m.masters.map { "\($0.host):\($0.port)" }.joined(separator: ","),
                                          "all_slots": "\(m.coversAllSlots)"])
        for observer in mapObservers { observer() }
    }

    // MARK: routing

    private func route(_ args: [String], deadline: UInt64, target: ClusterSlots.Node?, asking: Bool, attempt: Int,
                       done: @escaping (Result<RedisReply, RedisError>) -> Void) {
        guard !closed else { return done(.failure(.disconnected)) }
        let node: ClusterSlots.Node
        if let target {
            node = target
        } else if let key = ClusterSlots.routingKey(args) {
            guard let m = map.master(forKey: key) else { return done(.failure(.unavailable)) }
            node = m
        } else {
            guard let m = map.masters.first(where: { nodes[$0]?.isReady == true }) else { return done(.failure(.unavailable)) }
            node = m
        }
        let now = loop.now
        guard deadline > now else { return done(.failure(.timeout)) }
        let c = connection(to: node)
        if !c.isReady && !c.hasBeenReady && !c.firstAttemptFailed && !closed {
            // A master just learned of (a new map, a MOVED to a promoted replica, the first
            // commands after start) is still being connected to: the command waits for that first
            // attempt (bounded by the connect timeout). One whose attempt failed, or that lost its
            // server, fails at once.
            waiters[node, default: []].append { [weak self] in
                guard let self else { return done(.failure(.disconnected)) }
                self.route(args, deadline: deadline, target: node, asking: asking, attempt: attempt, done: done)
            }
            return
        }
        if asking { c.send(["ASKING"], timeoutNanos: deadline - now) { _ in } }
        c.send(args, timeoutNanos: deadline - now) { [weak self] r in
            guard let self, case .success(.error(let e)) = r else { return done(r) }
            // READONLY is a failover under way here (retried below), not a refusal.
            if RedisNodeConnection.refusesWrites(e, readOnlyCounts: false) {
                self.writesRefusedAt.store(monotonicNanos() | 1, ordering: .relaxed)
            }
            guard attempt + 1 < RedisClient.maxAttempts else { return done(r) }
            let redirect = ClusterSlots.Redirect(error: e) ?? (e.hasPrefix("READONLY") ? .tryAgain : nil)
            switch redirect {
            case nil:
                done(r)
            case .moved(_, let to)?:
                self.refreshMapSoon()
                let to = to.host.isEmpty ? ClusterSlots.Node(host: node.host, port: to.port) : to
                self.route(args, deadline: deadline, target: to, asking: false, attempt: attempt + 1, done: done)
            case .ask(_, let to)?:
                let to = to.host.isEmpty ? ClusterSlots.Node(host: node.host, port: to.port) : to
                self.route(args, deadline: deadline, target: to, asking: true, attempt: attempt + 1, done: done)
            case .tryAgain?, .clusterDown?:
                // A resharding step, a failover under way, a write that reached a replica.
                if redirect != .tryAgain || e.hasPrefix("READONLY") { self.refreshMapSoon() }
                let pause = min(UInt64(10_000_000) << UInt64(attempt), 200_000_000)
                guard self.loop.now &+ pause < deadline else { return done(r) }
                _ = self.loop.schedule(afterNanos: pause) { [weak self] in
                    guard let self else { return done(.failure(.disconnected)) }
                    self.route(args, deadline: deadline, target: nil, asking: false, attempt: attempt + 1, done: done)
                }
            }
        }
    }
}
