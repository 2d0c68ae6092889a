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
    let beatScript: RedisScript
    let connection: RedisConnection
    public let nodeID: String
    let role: String
    let intervalNanos: UInt64
    private let seen = Atomic<Int>(1)
    private var timer: TimerHandle?

    public init(connection: RedisConnection, nodeID: String, role: String, keys: FleetKeys = FleetKeys(), scriptsDirectory: String,
                intervalNanos: UInt64 = 2_000_000_000) throws(RedisScriptError) {
        prefix = keys.nodePrefix
        index = keys.nodeIndex
        beatScript = try RedisScript.load("beat", from: scriptsDirectory)
        self.connection = connection
        self.nodeID = nodeID
        self.role = role
        self.intervalNanos = intervalNanos
    }

    /// Live nodes at the last successful count (at least 1: this one).
    public var liveNodes: Int { seen.load(ordering: .relaxed) }

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
        let ttl = intervalNanos * 3 / 1_000_000
        connection.run(beatScript, keys: [index, prefix + nodeID], args: [nodeID, role, "\(ttl)"], timeoutNanos: 500_000_000) { [weak self] r in
            if case .success(.integer(let n)) = r { self?.seen.store(max(1, Int(n)), ordering: .relaxed) }
        }
        timer = connection.loop.schedule(afterNanos: intervalNanos) { [weak self] in self?.beat() }
    }
}
