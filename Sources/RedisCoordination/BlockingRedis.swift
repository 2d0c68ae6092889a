import Dispatch
import NetCore
import Runtime
import Synchronization
#if canImport(Glibc)
import Glibc
#endif

/// Redis for command-line tools: its own loop thread, one call at a time, waiting for each answer.
public final class BlockingRedis {
    let group: EventLoopGroup
    let connection: RedisClient
    let timeoutNanos: UInt64

    /// Connects, or throws `.unavailable` if Redis did not answer within `timeoutSeconds`.
    public init(endpoint: RedisEndpoint, timeoutSeconds: Double = 3) throws {
        group = try EventLoopGroup(count: 1, namePrefix: "redis-cli")
        group.start()
        timeoutNanos = UInt64(timeoutSeconds * 1e9)
        connection = RedisClient(endpoint: endpoint, loop: group.loops[0], logger: Logger(label: "redis", level: .error))
        let box = UncheckedBox(connection)
        group.loops[0].execute { box.value.start() }
        let deadline = monotonicNanos() + timeoutNanos
        while !connection.isUp {
            if monotonicNanos() > deadline { close(); throw RedisError.unavailable }
            usleep(5_000)
        }
    }

    /// One command's reply; a Redis error reply (WRONGTYPE, NOAUTH …) is thrown as `.server`.
    /// `node` sends it to that node of a cluster (otherwise it goes where its key lives).
    public func call(_ args: [String], on node: ClusterSlots.Node? = nil) throws(RedisError) -> RedisReply {
        let result = Mutex<Result<RedisReply, RedisError>?>(nil)
        let done = DispatchSemaphore(value: 0)
        let box = UncheckedBox(connection)
        let timeout = timeoutNanos
        group.loops[0].execute {
            let finish: (Result<RedisReply, RedisError>) -> Void = { r in
                result.withLock { $0 = r }
                done.signal()
            }
            if let node { box.value.send(args, to: node, timeoutNanos: timeout, done: finish) } else { box.value.send(args, timeoutNanos: timeout, done: finish) }
        }
        done.wait()
        let reply = try result.withLock { $0! }.get()
        if case .error(let e) = reply { throw .server(e) }
        return reply
    }

    /// The masters (one server: itself).
    public var masters: [ClusterSlots.Node] {
        let out = Mutex<[ClusterSlots.Node]>([])
        let done = DispatchSemaphore(value: 0)
        let box = UncheckedBox(connection)
        group.loops[0].execute {
            out.withLock { $0 = box.value.masters }
            done.signal()
        }
        done.wait()
        return out.withLock { $0 }
    }

    /// Runs a script by its SHA-1, sending its source once if Redis does not know it.
    public func run(_ script: RedisScript, keys: [String], args: [String]) throws(RedisError) -> RedisReply {
        let tail = ["\(keys.count)"] + keys + args
        do throws(RedisError) {
            return try call(["EVALSHA", script.sha1] + tail)
        } catch .server(let e) where e.hasPrefix("NOSCRIPT") {
            return try call(["EVAL", script.source] + tail)
        }
    }

    /// Every key matching `pattern` (SCAN, never KEYS), on every master of a cluster.
    public func scan(_ pattern: String) throws(RedisError) -> [String] {
        var keys: [String] = []
        for node in masters {
            var cursor = "0"
            repeat {
                let r = try call(["SCAN", cursor, "MATCH", pattern, "COUNT", "1000"], on: node)
                guard let parts = r.array, parts.count == 2, let next = parts[0].string else { break }
                keys += (parts[1].array ?? []).compactMap(\.string)
                cursor = next
            } while cursor != "0"
        }
        return keys
    }

    public func close() {
        let box = UncheckedBox(connection)
        group.loops[0].execute { box.value.close() }
        usleep(10_000)
        group.shutdown()
    }
}
