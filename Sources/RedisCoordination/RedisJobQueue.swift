import Domain
import NetCore
import Runtime

/// The job queue on a Redis Stream with one consumer group. Acknowledged jobs are deleted, so the
/// stream holds exactly the backlog (bounded by `maxBacklog`, never trimmed below what is pending).
/// All keys of a fleet share the hash tag `{jobs:<fleet>}`. Blocking claims need a connection of their own (a
/// blocked XREADGROUP holds every command behind it on the same connection).
/// The names of one fleet's keys. Several fleets (staging and production, or test runs) can
/// share one Redis; each has its own queue, locators and heartbeats. Per-user limits are shared.
public struct FleetKeys: Sendable {
    public let fleet: String
    public let stream: String
    public let dead: String
    /// Which gateway holds a request's stream (set at enqueue) and its transcript once finished.
    public let locatorPrefix: String
    public let transcriptPrefix: String
    public let nodePrefix: String
    /// The live nodes, scored by when their heartbeat expires.
    public let nodeIndex: String
    /// The live nodes that run generations, scored the same way.
    public let workerIndex: String
    /// A worker's model upstreams as it sees them (JSON, refreshed every 2 s): `admin status`.
    public let upstreamsPrefix: String

    public init(fleet: String = "main") {
        self.fleet = fleet
        stream = "{jobs:\(fleet)}:stream"
        dead = "{jobs:\(fleet)}:dead"
        locatorPrefix = "{jobs:\(fleet)}:req:"
        transcriptPrefix = "{jobs:\(fleet)}:done:"
        nodePrefix = "{fleet:\(fleet)}:node:"
        nodeIndex = "{fleet:\(fleet)}:nodes"
        workerIndex = "{fleet:\(fleet)}:workers"
        upstreamsPrefix = "{fleet:\(fleet)}:upstreams:"
    }

    /// Letters, digits, '-' and '_', 1...64 of them.
    public static func isValidName(_ s: String) -> Bool {
        !s.isEmpty && s.utf8.count <= 64 && s.utf8.allSatisfy { c in
            (c >= 48 && c <= 57) || (c >= 65 && c <= 90) || (c >= 97 && c <= 122) || c == 45 || c == 95
        }
    }
}

public final class RedisJobQueue: JobQueue, StreamDirectory, @unchecked Sendable {
    public let keys: FleetKeys
    /// A running stream's locator: the longest a stream may wait and run (cross-node cancel of a
    /// stream running longer finds nothing). Shortened to the replay window when it ends.
    let locatorTTLMs: Int
    public static let group = "workers"
    let connection: RedisConnection
    let claims: RedisConnection
    let maxBacklog: Int
    let timeoutNanos: UInt64
    let enqueueScript: RedisScript
    let ackScript: RedisScript
    let reclaimScript: RedisScript
    let forgetScript: RedisScript

    /// `claims` carries the blocking reads (it may be `connection` when claims never block).
    public init(connection: RedisConnection, claims: RedisConnection, scriptsDirectory: String, maxBacklog: Int,
                keys: FleetKeys = FleetKeys(), timeoutNanos: UInt64 = 1_000_000_000, locatorTTLMs: Int = 900_000) throws(RedisScriptError) {
        self.keys = keys
        self.locatorTTLMs = locatorTTLMs
        self.connection = connection
        self.claims = claims
        self.maxBacklog = maxBacklog
        self.timeoutNanos = timeoutNanos
        enqueueScript = try RedisScript.load("enqueue", from: scriptsDirectory)
        ackScript = try RedisScript.load("ack", from: scriptsDirectory)
        reclaimScript = try RedisScript.load("reclaim", from: scriptsDirectory)
        forgetScript = try RedisScript.load("forget", from: scriptsDirectory)
    }

    /// Creates the stream and its group if they do not exist (idempotent; any loop).
    public func prepare(done: @escaping @Sendable (Bool) -> Void) {
        let c = UncheckedBox(connection), stream = keys.stream
        connection.loop.execute {
            c.value.send(["XGROUP", "CREATE", stream, RedisJobQueue.group, "0", "MKSTREAM"], timeoutNanos: 1_000_000_000) { r in
                switch r {
                case .success(.error(let e)): done(e.hasPrefix("BUSYGROUP"))
                case .success: done(true)
                case .failure: done(false)
                }
            }
        }
    }

    public func enqueue(_ job: FleetJob, streamKey: String, holder: String, done: @escaping @Sendable (Result<Enqueued, JobQueueError>) -> Void) {
        let payload = CompletionWire.encode(job.request, job: job.ticket)
        let me = UncheckedBox(self)
        let body: @Sendable () -> Void = {
            let q = me.value
            q.connection.run(q.enqueueScript, keys: [q.keys.stream, q.keys.locatorPrefix + streamKey],
                             args: ["\(q.maxBacklog)", String(decoding: payload, as: UTF8.self), holder, "\(q.locatorTTLMs)"],
                             timeoutNanos: q.timeoutNanos) { r in
                switch r {
                case .success(.error(let e)) where e.hasPrefix("BUSY"):
                    done(.failure(.busy(backlog: Int(e.split(separator: " ").last ?? "") ?? q.maxBacklog)))
                case .success(let reply):
                    guard let parts = reply.array, parts.count == 2, let kind = parts[0].string, let value = parts[1].string else {
                        return done(.failure(.unavailable))
                    }
                    done(.success(kind == "DUP" ? .duplicate(holder: value) : .queued(id: value)))
                case .failure: done(.failure(.unavailable))
                }
            }
        }
        if connection.loop.inEventLoop { body() } else { connection.loop.execute(body) }
    }

    public func backlog(done: @escaping @Sendable (Int?) -> Void) {
        let me = UncheckedBox(self)
        connection.loop.execute {
            me.value.connection.send(["XLEN", me.value.keys.stream], timeoutNanos: me.value.timeoutNanos) { r in
                if case .success(.integer(let n)) = r { done(Int(n)) } else { done(nil) }
            }
        }
    }

    public func lookup(streamKey: String, done: @escaping @Sendable (Result<(holder: String?, transcript: [UInt8]?), JobQueueError>) -> Void) {
        let me = UncheckedBox(self)
        connection.loop.execute {
            let q = me.value
            q.connection.send(["MGET", q.keys.locatorPrefix + streamKey, q.keys.transcriptPrefix + streamKey],
                              timeoutNanos: q.timeoutNanos) { r in
                guard case .success(let reply) = r, let v = reply.array, v.count == 2 else { return done(.failure(.unavailable)) }
                var transcript: [UInt8]?
                if case .bulk(let b) = v[1] { transcript = b }
                done(.success((v[0].string, transcript)))
            }
        }
    }

    public func keepFinished(streamKey: String, transcript: [UInt8], ttlMs: Int) {
        let me = UncheckedBox(self)
        let body: @Sendable () -> Void = {
            let q = me.value
            q.connection.send(["SET", q.keys.transcriptPrefix + streamKey, String(decoding: transcript, as: UTF8.self),
                               "PX", "\(ttlMs)"], timeoutNanos: q.timeoutNanos) { _ in }
            // The locator lives as long as the transcript (the request_id is taken until then).
            q.connection.send(["PEXPIRE", q.keys.locatorPrefix + streamKey, "\(ttlMs)"], timeoutNanos: q.timeoutNanos) { _ in }
        }
        if connection.loop.inEventLoop { body() } else { connection.loop.execute(body) }
    }

    public func hold(streamKey: String, holder: String) {
        let me = UncheckedBox(self)
        let body: @Sendable () -> Void = {
            let q = me.value
            q.connection.send(["SET", q.keys.locatorPrefix + streamKey, holder, "PX", "\(q.locatorTTLMs)"], timeoutNanos: q.timeoutNanos) { _ in }
        }
        if connection.loop.inEventLoop { body() } else { connection.loop.execute(body) }
    }

    public func keepLocator(streamKey: String, ttlMs: Int) {
        let me = UncheckedBox(self)
        let body: @Sendable () -> Void = {
            let q = me.value
            q.connection.send(["PEXPIRE", q.keys.locatorPrefix + streamKey, "\(ttlMs)"], timeoutNanos: q.timeoutNanos) { _ in }
        }
        if connection.loop.inEventLoop { body() } else { connection.loop.execute(body) }
    }

    public func forget(streamKey: String, holder: String) {
        let me = UncheckedBox(self)
        let body: @Sendable () -> Void = {
            let q = me.value
            q.connection.run(q.forgetScript, keys: [q.keys.locatorPrefix + streamKey], args: [holder], timeoutNanos: q.timeoutNanos) { _ in }
        }
        if connection.loop.inEventLoop { body() } else { connection.loop.execute(body) }
    }

    public func claim(consumer: String, max: Int, blockMs: Int, done: @escaping @Sendable (Result<[QueuedJob], JobQueueError>) -> Void) {
        let me = UncheckedBox(self)
        claims.loop.execute {
            let q = me.value
            var args = ["XREADGROUP", "GROUP", RedisJobQueue.group, consumer, "COUNT", "\(max)"]
            if blockMs > 0 { args += ["BLOCK", "\(blockMs)"] }
            args += ["STREAMS", q.keys.stream, ">"]
            q.claims.send(args, timeoutNanos: q.timeoutNanos + UInt64(blockMs) * 1_000_000) { r in
                if case .success(.error(let e)) = r, e.hasPrefix("NOGROUP") {
                    // Redis lost the stream (a restart without persistence, a flush): make it again.
                    q.prepare { ok in done(ok ? .success([]) : .failure(.unavailable)) }
                    return
                }
                guard case .success(let reply) = r, !reply.isError else { return done(.failure(.unavailable)) }
                // [[stream, [[id, [field, value]]...]]] or nil when nothing came
                guard let streams = reply.array, let first = streams.first?.array, first.count == 2, let entries = first[1].array else {
                    return done(.success([]))
                }
                let jobs = entries.compactMap { e -> QueuedJob? in
                    guard let parts = e.array, parts.count == 2, let id = parts[0].string, let fields = parts[1].array,
                          fields.count >= 2, case .bulk(let payload) = fields[1] else { return nil }
                    return QueuedJob(id: id, job: RedisJobQueue.decode(payload), deliveries: 1)
                }
                done(.success(jobs))
            }
        }
    }

    public func ack(_ id: String) {
        let me = UncheckedBox(self)
        connection.loop.execute {
            let q = me.value
            q.connection.run(q.ackScript, keys: [q.keys.stream], args: [RedisJobQueue.group, id], timeoutNanos: q.timeoutNanos) { _ in }
        }
    }

    public func reclaim(consumer: String, minIdleMs: Int, max: Int, maxDeliveries: Int,
                        done: @escaping @Sendable (Result<(claimed: [QueuedJob], dead: [QueuedJob]), JobQueueError>) -> Void) {
        let me = UncheckedBox(self)
        connection.loop.execute {
            let q = me.value
            q.connection.run(q.reclaimScript, keys: [q.keys.stream, q.keys.dead],
                             args: [RedisJobQueue.group, consumer, "\(minIdleMs)", "\(max)", "\(maxDeliveries)"],
                             timeoutNanos: q.timeoutNanos) { r in
                guard case .success(let reply) = r, let halves = reply.array, halves.count == 2 else { return done(.failure(.unavailable)) }
                func jobs(_ v: RedisReply) -> [QueuedJob] {
                    (v.array ?? []).compactMap { e in
                        guard let p = e.array, p.count == 3, let id = p[0].string, case .bulk(let payload) = p[1],
                              let n = p[2].integer else { return nil }
                        return QueuedJob(id: id, job: RedisJobQueue.decode(payload), deliveries: Int(n))
                    }
                }
                done(.success((jobs(halves[0]), jobs(halves[1]))))
            }
        }
    }

    /// A job as the queue holds it; nil if it cannot be read (the worker drops it).
    static func decode(_ payload: [UInt8]) -> FleetJob? {
        guard let (request, ticket) = try? CompletionWire.decodeJob(payload) else { return nil }
        return FleetJob(request: request, ticket: ticket)
    }
}
