import Domain
import NetCore
import Runtime
import Synchronization

/// The job queue on a Redis Stream with one consumer group. Acknowledged jobs are deleted, so the
/// stream holds exactly the backlog (bounded by `maxBacklog`, never trimmed below what is pending).
/// All keys of a fleet share the hash tag `{jobs:<fleet>}`. Blocking claims need a connection of their own (a
/// blocked XREADGROUP holds every command behind it on the same connection).
/// The names of one fleet's keys. Several fleets (staging and production, or test runs) can
/// share one Redis; each has its own queue, locators and heartbeats. Per-user limits are shared.
public struct FleetKeys: Sendable {
    public let fleet: String
    public let nodePrefix: String
    /// The live nodes, scored by when their heartbeat expires.
    public let nodeIndex: String
    /// The live nodes that run generations, scored the same way.
    public let workerIndex: String
    /// A worker's model upstreams as it sees them (JSON, refreshed every 2 s): `admin status`.
    public let upstreamsPrefix: String
    /// How many job streams the fleet's queue is split into (`--job-shards`), and where the
    /// fleet keeps that number (every node must use the same).
    public let shards: Int
    public let shardsKey: String

    /// With one shard the keys are those of before sharding (`{jobs:F}:stream`, …); with K, shard
    /// s is `{jobs:F:s}:stream` (its own hash tag: its own slot on a cluster) with its own
    /// dead letters, and a request's locator and transcript live in the shard its stream key
    /// hashes to — the shard its job goes to, so the enqueue stays one atomic script on one slot.
    public init(fleet: String = "main", shards: Int = 1) {
        self.fleet = fleet
        self.shards = max(1, shards)
        nodePrefix = "{fleet:\(fleet)}:node:"
        nodeIndex = "{fleet:\(fleet)}:nodes"
        workerIndex = "{fleet:\(fleet)}:workers"
        upstreamsPrefix = "{fleet:\(fleet)}:upstreams:"
        shardsKey = "{fleet:\(fleet)}:shards"
    }

    public static let maxShards = 64

    func tag(_ s: Int) -> String { shards == 1 ? "{jobs:\(fleet)}" : "{jobs:\(fleet):\(s)}" }
    public func stream(_ s: Int) -> String { tag(s) + ":stream" }
    public func dead(_ s: Int) -> String { tag(s) + ":dead" }
    /// The shard a request's job, locator and transcript go to: stable, spread by hash.
    public func shard(of streamKey: String) -> Int { shards == 1 ? 0 : Int(ClusterSlots.crc16(Array(streamKey.utf8))) % shards }
    /// Which gateway holds a request's stream (set at enqueue), and its transcript once finished.
    public func locator(_ streamKey: String) -> String { locator(streamKey, shard: shard(of: streamKey)) }
    /// The locator kept in another shard: an enqueue that fell over to it while its own shard's
    /// master was failing over.
    func locator(_ streamKey: String, shard s: Int) -> String { tag(s) + ":req:" + streamKey }
    public func transcript(_ streamKey: String) -> String { tag(shard(of: streamKey)) + ":done:" + streamKey }

    /// A queue entry's id as the queue hands it out: with shards, prefixed by its shard (`2/1733-0`).
    func jobID(_ entry: String, shard s: Int) -> String { shards == 1 ? entry : "\(s)/\(entry)" }
    /// (shard, entry) of an id `jobID` made; nil for one it did not.
    func entry(of id: String) -> (Int, String)? {
        guard shards > 1 else { return (0, id) }
        guard let slash = id.firstIndex(of: "/"), let s = Int(id[..<slash]), s >= 0, s < shards else { return nil }
        return (s, String(id[id.index(after: slash)...]))
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
    let connection: RedisClient
    let claims: RedisClient
    let maxBacklog: Int
    let timeoutNanos: UInt64
    let enqueueScript: RedisScript
    let ackScript: RedisScript
    let reclaimScript: RedisScript
    let forgetScript: RedisScript

    /// `claims` carries the blocking reads (it may be `connection` when claims never block).
    public init(connection: RedisClient, claims: RedisClient, scriptsDirectory: String, maxBacklog: Int,
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

    /// Creates the streams and their group if they do not exist (idempotent; any loop).
    public func prepare(done: @escaping @Sendable (Bool) -> Void) {
        let keys = keys
        onEveryShard({ ["XGROUP", "CREATE", keys.stream($0), RedisJobQueue.group, "0", "MKSTREAM"] }, timeoutNanos: 1_000_000_000) { replies in
            done(replies.allSatisfy { r in
                switch r {
                case .success(.error(let e)): return e.hasPrefix("BUSYGROUP")
                case .success: return true
                case .failure: return false
                }
            })
        }
    }

    /// Sends `command(shard)` for every shard at once; `done` gets the replies in shard order.
    private func onEveryShard(_ command: @escaping @Sendable (Int) -> [String], timeoutNanos: UInt64,
                              done: @escaping @Sendable ([Result<RedisReply, RedisError>]) -> Void) {
        let c = UncheckedBox(connection), k = keys.shards
        let replies = Mutex((left: k, got: [Result<RedisReply, RedisError>](repeating: .failure(.unavailable), count: k)))
        connection.loop.execute {
            for s in 0..<k {
                c.value.send(command(s), timeoutNanos: timeoutNanos) { r in
                    let all = replies.withLock { x -> [Result<RedisReply, RedisError>]? in
                        x.got[s] = r
                        x.left -= 1
                        return x.left == 0 ? x.got : nil
                    }
                    if let all { done(all) }
                }
            }
        }
    }

    /// Each shard's share of the fleet-wide backlog bound.
    var backlogPerShard: Int { max(1, (maxBacklog + keys.shards - 1) / keys.shards) }

    public func enqueue(_ job: FleetJob, streamKey: String, holder: String, done: @escaping @Sendable (Result<Enqueued, JobQueueError>) -> Void) {
        let payload = CompletionWire.encode(job.request, job: job.ticket)
        let me = UncheckedBox(self)
        let home = keys.shard(of: streamKey)
        // On a cluster, a shard whose master does not answer (failing over) passes the job to the
        // next shard, and so on: each shard is its own slot, spread over the masters. The request
        // is then known by its id in that shard only (another gateway's attach misses it).
        let tries = connection.isCluster ? keys.shards : 1
        @Sendable func attempt(_ n: Int) {
            let q = me.value
            let shard = (home + n) % q.keys.shards
            q.connection.run(q.enqueueScript, keys: [q.keys.stream(shard), q.keys.locator(streamKey, shard: shard)],
                             args: ["\(q.backlogPerShard)", String(decoding: payload, as: UTF8.self), holder, "\(q.locatorTTLMs)"],
                             timeoutNanos: q.timeoutNanos) { r in
                switch r {
                case .success(.error(let e)) where e.hasPrefix("BUSY"):
                    let n = Int(e.split(separator: " ").last ?? "") ?? q.backlogPerShard
                    done(.failure(.busy(backlog: n * q.keys.shards)))
                case .failure(.unavailable),
                     .success(.error(_)) where RedisJobQueue.neverRan(r):
                    // Never run there (its master down, or the cluster still refusing after the
                    // client's retries): the next shard may take it. A timeout or a broken
                    // connection may have run it: not sent again (it could run twice).
                    if n + 1 < tries { return attempt(n + 1) }
                    done(.failure(.unavailable))
                case .success(let reply):
                    guard let parts = reply.array, parts.count == 2, let kind = parts[0].string, let value = parts[1].string else {
                        return done(.failure(.unavailable))
                    }
                    done(.success(kind == "DUP" ? .duplicate(holder: value) : .queued(id: q.keys.jobID(value, shard: shard))))
                case .failure:
                    done(.failure(.unavailable))
                }
            }
        }
        if connection.loop.inEventLoop { attempt(0) } else { connection.loop.execute { attempt(0) } }
    }

    public func backlog(done: @escaping @Sendable (Int?) -> Void) {
        let keys = keys
        onEveryShard({ ["XLEN", keys.stream($0)] }, timeoutNanos: timeoutNanos) { replies in
            var sum = 0
            for r in replies {
                guard case .success(.integer(let n)) = r else { return done(nil) }
                sum += Int(n)
            }
            done(sum)
        }
    }

    public func lookup(streamKey: String, done: @escaping @Sendable (Result<(holder: String?, transcript: [UInt8]?), JobQueueError>) -> Void) {
        let me = UncheckedBox(self)
        connection.loop.execute {
            let q = me.value
            q.connection.send(["MGET", q.keys.locator(streamKey), q.keys.transcript(streamKey)],
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
            q.connection.send(["SET", q.keys.transcript(streamKey), String(decoding: transcript, as: UTF8.self),
                               "PX", "\(ttlMs)"], timeoutNanos: q.timeoutNanos) { _ in }
            // The locator lives as long as the transcript (the request_id is taken until then).
            q.connection.send(["PEXPIRE", q.keys.locator(streamKey), "\(ttlMs)"], timeoutNanos: q.timeoutNanos) { _ in }
        }
        if connection.loop.inEventLoop { body() } else { connection.loop.execute(body) }
    }

    public func hold(streamKey: String, holder: String) {
        let me = UncheckedBox(self)
        let body: @Sendable () -> Void = {
            let q = me.value
            q.connection.send(["SET", q.keys.locator(streamKey), holder, "PX", "\(q.locatorTTLMs)"], timeoutNanos: q.timeoutNanos) { _ in }
        }
        if connection.loop.inEventLoop { body() } else { connection.loop.execute(body) }
    }

    public func keepLocator(streamKey: String, ttlMs: Int) {
        let me = UncheckedBox(self)
        let body: @Sendable () -> Void = {
            let q = me.value
            q.connection.send(["PEXPIRE", q.keys.locator(streamKey), "\(ttlMs)"], timeoutNanos: q.timeoutNanos) { _ in }
        }
        if connection.loop.inEventLoop { body() } else { connection.loop.execute(body) }
    }

    public func forget(streamKey: String, holder: String) {
        let me = UncheckedBox(self)
        let body: @Sendable () -> Void = {
            let q = me.value
            q.connection.run(q.forgetScript, keys: [q.keys.locator(streamKey)], args: [holder], timeoutNanos: q.timeoutNanos) { _ in }
        }
        if connection.loop.inEventLoop { body() } else { connection.loop.execute(body) }
    }

    /// Where the next claim starts among the shards (each claim starts one further: fairness).
    private let claimTurn = Atomic<Int>(0)

    public func claim(consumer: String, max: Int, blockMs: Int, done: @escaping @Sendable (Result<[QueuedJob], JobQueueError>) -> Void) {
        let me = UncheckedBox(self)
        claims.loop.execute {
            let q = me.value
            // One read over several shards on one Redis (on a cluster each shard is read on its
            // own master). Never more than `max` jobs: COUNT is per stream, so at most `max`
            // streams are read, max / streams each, starting one shard further every time.
            let k = q.keys.shards, n = Swift.min(k, Swift.max(1, max))
            let start = q.claimTurn.add(1, ordering: .relaxed).oldValue
            let picked = (0..<n).map { (start + $0) % k }
            var args = ["XREADGROUP", "GROUP", RedisJobQueue.group, consumer, "COUNT", "\(Swift.max(1, max / n))"]
            if blockMs > 0 { args += ["BLOCK", "\(blockMs)"] }
            if q.claims.isCluster { return q.claimOnCluster(consumer: consumer, max: max, shards: picked, blockMs: blockMs, done: done) }
            args += ["STREAMS"] + picked.map(q.keys.stream) + picked.map { _ in ">" }
            q.claims.send(args, timeoutNanos: q.timeoutNanos + UInt64(blockMs) * 1_000_000) { r in
                q.finish(q.read(r, shards: picked), done: done)
            }
        }
    }

    /// The longest a claim waits on one shard of a cluster before looking at all of them again.
    static let clusterBlockMs = 100

    /// On a cluster one read covers one slot: every picked shard is read at once without waiting
    /// (each on its own master; never more than `max` jobs in all); if none had a job the claim
    /// waits on one shard that answered for at most `clusterBlockMs`, then looks at all of them
    /// again, taking turns, until a job comes or `blockMs` has passed. A job on a shard nobody
    /// waits on is seen within `clusterBlockMs`.
    private func claimOnCluster(consumer: String, max: Int, shards picked: [Int], blockMs: Int,
                                done: @escaping @Sendable (Result<[QueuedJob], JobQueueError>) -> Void) {
        let deadline = claims.loop.now &+ UInt64(Swift.max(0, blockMs)) * 1_000_000
        sweep(consumer: consumer, max: max, shards: picked, turn: 0, deadline: deadline, done: done)
    }

    private func sweep(consumer: String, max: Int, shards picked: [Int], turn: Int, deadline: UInt64,
                       done: @escaping @Sendable (Result<[QueuedJob], JobQueueError>) -> Void) {
        let me = UncheckedBox(self)
        let each = Swift.max(1, max / picked.count)
        var left = picked.count, jobs: [QueuedJob] = [], failed = Set<Int>(), lost = false
        for shard in picked {
            let args = ["XREADGROUP", "GROUP", RedisJobQueue.group, consumer, "COUNT", "\(each)", "STREAMS", keys.stream(shard), ">"]
            claims.send(args, timeoutNanos: timeoutNanos) { r in
                let q = me.value
                switch q.read(r, shards: [shard]) {
                case .jobs(let got): jobs += got
                case .lostGroup: lost = true
                case .failed: failed.insert(shard)
                }
                left -= 1
                guard left == 0 else { return }
                if lost {
                    // A shard lost its stream (a flush, a failover to a replica without it): made
                    // again, and what the other shards gave is handed over all the same.
                    q.prepare { _ in }
                    if !jobs.isEmpty { return done(.success(jobs)) }
                    return q.finish(.lostGroup, done: done)
                }
                // Waits on a shard that answered (one whose master is down fails at once).
                let answered = picked.filter { !failed.contains($0) }
                if answered.isEmpty { return done(.failure(.unavailable)) }
                let now = q.claims.loop.now
                if !jobs.isEmpty || now >= deadline { return done(.success(jobs)) }
                let waitOn = answered[turn % answered.count]
                let wait = Swift.max(1, Swift.min(RedisJobQueue.clusterBlockMs, Int((deadline - now) / 1_000_000)))
                let args = ["XREADGROUP", "GROUP", RedisJobQueue.group, consumer, "COUNT", "\(max)", "BLOCK", "\(wait)",
                            "STREAMS", q.keys.stream(waitOn), ">"]
                q.claims.send(args, timeoutNanos: q.timeoutNanos + UInt64(wait) * 1_000_000) { r in
                    let read = q.read(r, shards: [waitOn])
                    if case .jobs(let got) = read, got.isEmpty, q.claims.loop.now < deadline {
                        return q.sweep(consumer: consumer, max: max, shards: picked, turn: turn + 1, deadline: deadline, done: done)
                    }
                    q.finish(read, done: done)
                }
            }
        }
    }

    /// An answer that says the command did not run: the connection was down, or the cluster still
    /// refused it (a redirection, a failover under way) after the client's retries.
    static func neverRan(_ r: Result<RedisReply, RedisError>) -> Bool {
        switch r {
        case .failure(.unavailable): return true
        case .success(.error(let e)): return ClusterSlots.Redirect(error: e) != nil || e.hasPrefix("READONLY")
        default: return false
        }
    }

    enum ClaimRead { case jobs([QueuedJob]), lostGroup, failed }

    /// Reads an XREADGROUP reply over `shards`: `[[stream, [[id, [field, value]]...]], …]`, or nil
    /// when nothing came.
    private func read(_ r: Result<RedisReply, RedisError>, shards: [Int]) -> ClaimRead {
        if case .success(.error(let e)) = r, e.hasPrefix("NOGROUP") { return .lostGroup }
        guard case .success(let reply) = r, !reply.isError else { return .failed }
        var jobs: [QueuedJob] = []
        for stream in reply.array ?? [] {
            guard let pair = stream.array, pair.count == 2, let name = pair[0].string,
                  let shard = shards.first(where: { keys.stream($0) == name }), let entries = pair[1].array else { continue }
            for e in entries {
                guard let parts = e.array, parts.count == 2, let id = parts[0].string, let fields = parts[1].array,
                      fields.count >= 2, case .bulk(let payload) = fields[1] else { continue }
                jobs.append(QueuedJob(id: keys.jobID(id, shard: shard), job: RedisJobQueue.decode(payload), deliveries: 1))
            }
        }
        return .jobs(jobs)
    }

    /// A lost stream (a restart without persistence, a flush) is made again.
    private func finish(_ read: ClaimRead, done: @escaping @Sendable (Result<[QueuedJob], JobQueueError>) -> Void) {
        switch read {
        case .jobs(let jobs): done(.success(jobs))
        case .lostGroup: prepare { ok in done(ok ? .success([]) : .failure(.unavailable)) }
        case .failed: done(.failure(.unavailable))
        }
    }

    public func ack(_ id: String) {
        guard let (shard, entry) = keys.entry(of: id) else { return }
        let me = UncheckedBox(self)
        connection.loop.execute {
            let q = me.value
            q.connection.run(q.ackScript, keys: [q.keys.stream(shard)], args: [RedisJobQueue.group, entry], timeoutNanos: q.timeoutNanos) { _ in }
        }
    }

    public func reclaim(consumer: String, minIdleMs: Int, max: Int, maxDeliveries: Int,
                        done: @escaping @Sendable (Result<(claimed: [QueuedJob], dead: [QueuedJob]), JobQueueError>) -> Void) {
        let me = UncheckedBox(self)
        // Shard by shard (one slot each), starting one further every time, never more than `max`
        // taken over in all; a shard that fails does not hide the others' dead letters.
        let k = keys.shards
        let start = claimTurn.add(1, ordering: .relaxed).oldValue
        connection.loop.execute {
            let q = me.value
            var claimed: [QueuedJob] = [], dead: [QueuedJob] = [], failed = 0
            func step(_ i: Int) {
                guard i < k, claimed.count < max else {
                    return done(failed == k ? .failure(.unavailable) : .success((claimed, dead)))
                }
                let shard = (start + i) % k
                q.connection.run(q.reclaimScript, keys: [q.keys.stream(shard), q.keys.dead(shard)],
                                 args: [RedisJobQueue.group, consumer, "\(minIdleMs)", "\(max - claimed.count)", "\(maxDeliveries)"],
                                 timeoutNanos: q.timeoutNanos) { r in
                    if case .success(let reply) = r, let halves = reply.array, halves.count == 2 {
                        func jobs(_ v: RedisReply) -> [QueuedJob] {
                            (v.array ?? []).compactMap { e in
                                guard let p = e.array, p.count == 3, let id = p[0].string, case .bulk(let payload) = p[1],
                                      let n = p[2].integer else { return nil }
                                return QueuedJob(id: q.keys.jobID(id, shard: shard), job: RedisJobQueue.decode(payload), deliveries: Int(n))
                            }
                        }
                        claimed += jobs(halves[0])
                        dead += jobs(halves[1])
                    } else {
                        failed += 1
                    }
                    step(i + 1)
                }
            }
            step(0)
        }
    }

    /// A job as the queue holds it; nil if it cannot be read (the worker drops it).
    static func decode(_ payload: [UInt8]) -> FleetJob? {
        guard let (request, ticket) = try? CompletionWire.decodeJob(payload) else { return nil }
        return FleetJob(request: request, ticket: ticket)
    }
}
