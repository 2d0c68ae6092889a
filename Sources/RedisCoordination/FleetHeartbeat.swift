import NetCore
import Runtime
import Synchronization

/// Says "this node is alive" in Redis every interval (a key with a TTL of three intervals), and
/// counts the live nodes it sees. The count divides the per-node fallback limits while Redis is
/// down (the last count seen is kept), and `admin status` lists the nodes.
public final class FleetHeartbeat: @unchecked Sendable {
    /// Where nodes beat: `FleetKeys.nodePrefix`.
    public let prefix: String
    let connection: RedisConnection
    public let nodeID: String
    let role: String
    let intervalNanos: UInt64
    private let seen = Atomic<Int>(1)
    private var timer: TimerHandle?

    public init(connection: RedisConnection, nodeID: String, role: String, keys: FleetKeys = FleetKeys(), intervalNanos: UInt64 = 2_000_000_000) {
        prefix = keys.nodePrefix
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
        connection.send(["SET", prefix + nodeID, role, "PX", "\(ttl)"], timeoutNanos: 500_000_000) { _ in }
        count(cursor: "0", found: 0)
        timer = connection.loop.schedule(afterNanos: intervalNanos) { [weak self] in self?.beat() }
    }

    private func count(cursor: String, found: Int) {
        connection.send(["SCAN", cursor, "MATCH", prefix + "*", "COUNT", "1000"], timeoutNanos: 500_000_000) { [weak self] r in
            guard let self, case .success(let reply) = r, let parts = reply.array, parts.count == 2,
                  let next = parts[0].string, let keys = parts[1].array else { return }
            let total = found + keys.count
            if next == "0" { self.seen.store(max(1, total), ordering: .relaxed) } else { self.count(cursor: next, found: total) }
        }
    }
}
