import NetCore
import Runtime
import Synchronization

/// Says "this node is alive" in Redis every interval (`lua/beat.lua`: a key with a TTL of three
/// intervals and an entry in the fleet's index), and counts the live nodes it sees. The count divides the per-node fallback limits while Redis is
/// down (the last count seen is kept), and `admin status` lists the nodes.
public final class FleetHeartbeat: @unchecked Sendable {
    /// Where nodes beat: `FleetKeys.nodePrefix` and `FleetKeys.nodeIndex`.
    public let prefix: String
    let index: String
    let workerIndex: String
    let beatScript: RedisScript
    let connection: RedisClient
    public let nodeID: String
    let role: String
    let intervalNanos: UInt64
    private let seen = Atomic<Int>(1)
    /// Live nodes that run generations at the last count (-1: not counted yet).
    private let seenWorkers = Atomic<Int>(-1)
    /// Whether this node runs generations (counted among the workers).
    public var runsGenerations = false
    private var timer: TimerHandle?

    public init(connection: RedisClient, nodeID: String, role: String, keys: FleetKeys = FleetKeys(), scriptsDirectory: String,
                intervalNanos: UInt64 = 2_000_000_000) throws(RedisScriptError) {
        prefix = keys.nodePrefix
        index = keys.nodeIndex
        workerIndex = keys.workerIndex
        beatScript = try RedisScript.load("beat", from: scriptsDirectory)
        self.connection = connection
        self.nodeID = nodeID
        self.role = role
        self.intervalNanos = intervalNanos
    }

    /// Live nodes at the last successful count (at least 1: this one).
    public var liveNodes: Int { seen.load(ordering: .relaxed) }
    /// Live nodes that run generations at the last successful count (nil: not counted yet).
    public var liveWorkers: Int? {
        let n = seenWorkers.load(ordering: .relaxed)
        return n < 0 ? nil : n
    }

    /// Starts beating (any thread).
    public func start() {
        let box = UncheckedBox(self)
        connection.loop.execute { box.value.beat() }
    }

    /// Stops beating and removes the node's key at once (a drained node leaves the count now,
    /// not when its key expires).
    public func stop() {
        let box = UncheckedBox(self)
        connection.loop.execute {
            let me = box.value
            me.stopped = true
            me.timer?.cancel()
            me.connection.send(["DEL", me.prefix + me.nodeID], timeoutNanos: 200_000_000) { _ in }
            me.connection.send(["ZREM", me.index, me.nodeID], timeoutNanos: 200_000_000) { _ in }
            if me.runsGenerations { me.connection.send(["ZREM", me.workerIndex, me.nodeID], timeoutNanos: 200_000_000) { _ in } }
        }
    }

    private var stopped = false

    private func beat() {
        guard !stopped else { return }
        guard connection.isReady else {
            // Not connected yet (or reconnecting): beat as soon as it is, not an interval later.
            timer = connection.loop.schedule(afterNanos: 50_000_000) { [weak self] in self?.beat() }
            return
        }
        runBeat()
        timer = connection.loop.schedule(afterNanos: intervalNanos) { [weak self] in self?.beat() }
    }

    private func runBeat() {
        let ttl = intervalNanos * 3 / 1_000_000
        connection.run(beatScript, keys: [index, prefix + nodeID, workerIndex],
                       args: [nodeID, role, "\(ttl)", runsGenerations ? "1" : "0", prefix], timeoutNanos: 500_000_000) { [weak self] r in
            if case .success(.array(let counts)) = r, counts.count == 2, case .integer(let n) = counts[0], case .integer(let w) = counts[1] {
                self?.seen.store(max(1, Int(n)), ordering: .relaxed)
                self?.seenWorkers.store(Int(w), ordering: .relaxed)
                if w == 0 { self?.recountWorkers() }
            }
        }
    }

    /// With no worker seen, the count is asked for again every 250 ms (only in that state): a
    /// worker that joins is used within a fraction of a second, not a heartbeat later.
    private func recountWorkers() {
        recountTimer?.cancel()
        recountTimer = connection.loop.schedule(afterNanos: 250_000_000) { [weak self] in
            guard let self, !self.stopped, self.seenWorkers.load(ordering: .relaxed) == 0, self.connection.isReady else { return }
            self.runBeat()
        }
    }
    private var recountTimer: TimerHandle?
}
