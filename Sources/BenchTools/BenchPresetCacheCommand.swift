import Dispatch
import Domain
import Foundation
import NetCore
import Storage
import RedisCoordination
import Runtime
import Synchronization

/// `playground bench-preset-cache`: loading a preset by id through the shared Redis cache against
/// straight from PostgreSQL (same presets, same run, same loop), the outbox's append rate, and
/// how fast the replayer drains it into the database.
public enum BenchPresetCacheCommand {
    public static let spec = CommandSpec("bench-preset-cache", summary: "Preset load by id: Redis cache vs PostgreSQL; outbox append and replay rates.", flags: [
        .option("database-url", "URL", "PostgreSQL (or DATABASE_URL)"),
        .option("redis-url", "URL", "Redis (or REDIS_URL)"),
        .option("presets", "N", default: "2000", "presets to create and load"),
        .option("loads", "N", default: "20000", "loads to time on each side"),
        .option("concurrency", "N", default: "16", "loads in flight at once"),
        .option("writes", "N", default: "2000", "writes to queue in the outbox and replay"),
        .option("lua-dir", "DIR", default: ProjectPaths.directory("lua", marker: "admit.lua"), "the Redis scripts"),
    ])

    public static func run(_ a: Arguments) throws -> Int32 {
        guard let dbURL = a.optionalString("database-url") ?? Arguments.environment("DATABASE_URL") else {
            throw ArgumentError(message: "set DATABASE_URL or --database-url")
        }
        guard let redisURL = a.optionalString("redis-url") ?? Arguments.environment("REDIS_URL"), let endpoint = RedisEndpoint(url: redisURL) else {
            throw ArgumentError(message: "set REDIS_URL or --redis-url (redis://host:port[/db])")
        }
        let presetCount = try a.int("presets"), loads = try a.int("loads"), concurrency = try a.int("concurrency"), writes = try a.int("writes")
        guard presetCount > 0, loads > 0, concurrency > 0, writes >= 0 else { throw ArgumentError(message: "counts must be positive") }
        let luaDir = a.string("lua-dir")
        let logger = Logger(label: "bench", level: .warning)
        let pool = PGPool(url: dbURL, size: 4, logger: logger)
        pool.start()
        defer { pool.stop() }
        _ = try pool.runBlocking { conn throws(PGError) in try Migrations.apply(conn, directory: ProjectPaths.directory("sql", marker: "001_schema.sql")) }
        let group = try EventLoopGroup(count: 1, namePrefix: "bench")
        group.start()
        defer { group.shutdown() }
        let loop = group.loops[0]
        let conn = RedisClient(endpoint: endpoint, loop: loop, logger: logger)
        let cb = UncheckedBox(conn)
        loop.execute { cb.value.start() }
        let deadline = monotonicNanos() + 3_000_000_000
        while !conn.isReady { guard monotonicNanos() < deadline else { throw OperationalError(description: "cannot reach Redis") }; usleep(5000) }
        let keys = PresetCacheKeys(namespace: "bench" + String(UInt32.random(in: 0...UInt32.max), radix: 36))
        let cache = try RedisPresetCache(connection: conn, keys: keys, scriptsDirectory: luaDir)

        // Presets in the database, and the same presets in the cache.
        let user = Identity(userID: "bench-cache-" + keys.namespace, orgID: nil, keyID: 0)
        var policy = PresetCachePolicy()
        policy.capPerUser = max(policy.capPerUser, presetCount)
        let fullCache = try RedisPresetCache(connection: conn, keys: keys, policy: policy, scriptsDirectory: luaDir)
        let created: [Preset] = try pool.runBlocking { c throws(PGError) -> [Preset] in
            var out: [Preset] = []
            for i in 0..<presetCount {
                var f = PresetFields()
                f.name = "bench preset \(i)"
                f.prompt = String(repeating: "Summarize the following text in three sentences. ", count: 6) + "{{input}}"
                f.tags = ["bench", "t\(i % 10)"]
                if case .success(let p) = try PresetRepository.create(c, user: user, fields: f) { out.append(p) }
            }
            return out
        }
        for chunk in stride(from: 0, to: created.count, by: 100) { fullCache.fill(user: user.userID, Array(created[chunk..<min(chunk + 100, created.count)])) }
        let ids = created.map(\.id)
        printLine("preset load by id: \(ids.count) presets of one user (~\(created[0].prompt.utf8.count + 200) B each), \(loads) loads, \(concurrency) in flight, one event loop")

        func measure(_ name: String, _ load: @escaping @Sendable (String, @escaping @Sendable (Bool) -> Void) -> Void) -> [Int] {
            let times = Mutex<[Int]>([])
            let misses = Atomic<Int>(0)
            let done = DispatchSemaphore(value: 0)
            let started = Atomic<Int>(0)
            let finished = Atomic<Int>(0)
            let t0 = monotonicNanos()
            @Sendable func next() {
                let n = started.add(1, ordering: .relaxed).newValue
                guard n <= loads else { return }
                let id = ids[(n &* 7919) % ids.count]
                let s = monotonicNanos()
                load(id) { ok in
                    let us = Int(monotonicNanos() - s) / 1000
                    times.withLock { $0.append(us) }
                    if !ok { misses.add(1, ordering: .relaxed) }
                    if finished.add(1, ordering: .relaxed).newValue == loads { done.signal() } else { loop.execute { next() } }
                }
            }
            loop.execute { for _ in 0..<concurrency { next() } }
            done.wait()
            let secs = Double(monotonicNanos() - t0) / 1e9
            let xs = times.withLock { $0 }.sorted()
            printLine(String(format: "  %@  p50 %5d µs  p99 %5d µs  max %6d µs  %7.0f loads/s  (not found: %d)", name.padding(12), xs[xs.count / 2],
                             xs[min(xs.count - 1, xs.count * 99 / 100)], xs.last ?? 0, Double(loads) / secs, misses.load(ordering: .relaxed)))
            return xs
        }
        // Warm both sides a little, then measure each.
        _ = measure("(warm-up db)", { id, done in pool.run(on: loop, { c throws(PGError) in try PresetRepository.get(c, user: user, id: id) }) { r in done((try? r.get()) != nil) } })
        let db = measure("postgresql", { id, done in
            pool.run(on: loop, { c throws(PGError) in try PresetRepository.get(c, user: user, id: id) }) { r in
                if case .success(let p?) = r { done(p.id == id) } else { done(false) }
            }
        })
        let cached = measure("redis cache", { id, done in
            cache.lookup(user: user.userID, id: id) { r in if case .hit(let c, _) = r { done(c.preset.id == id) } else { done(false) } }
        })
        printLine(String(format: "  cache / database: p50 ×%.2f, p99 ×%.2f", Double(cached[cached.count / 2]) / Double(max(1, db[db.count / 2])),
                         Double(cached[cached.count * 99 / 100]) / Double(max(1, db[db.count * 99 / 100]))))

        guard writes > 0 else { return 0 }
        // The outbox: appends (as while the database is down), then the replayer drains them.
        let users = (0..<10).map { "bench-outbox-\(keys.namespace)-\($0)" }
        let appended = Atomic<Int>(0)
        let appendDone = DispatchSemaphore(value: 0)
        let t0 = monotonicNanos()
        loop.execute {
            for i in 0..<writes {
                var f = PresetFields()
                f.name = "queued \(i)"
                f.prompt = "p"
                let u = users[i % users.count]
                let id = Credentials.newUUID()
                let now = Timestamps.format(micros: Int64(Date().timeIntervalSince1970 * 1e6))
                let w = PresetWrite(key: Credentials.newUUID(), op: .create, presetID: id, userID: u, orgID: nil, fields: f, queuedAt: now)
                let shown = Preset(id: id, userID: u, name: f.name!, description: "", tags: [], prompt: "p", parameters: .init(),
                                   createdAt: now, updatedAt: now, version: 1)
                cache.append(w, showing: shown) { _ in
                    if appended.add(1, ordering: .relaxed).newValue == writes { appendDone.signal() }
                }
            }
        }
        appendDone.wait()
        let appendSecs = Double(monotonicNanos() - t0) / 1e9
        let replayer = OutboxReplayer(pool: pool, owner: "bench", logger: logger) {
            try RedisOutboxDrain(redis: BlockingRedis(endpoint: endpoint), keys: keys, scriptsDirectory: luaDir)
        }
        let r0 = monotonicNanos()
        var replayed = 0
        while replayed < writes {
            let n = replayer.replayOnce()
            if n == 0 { break }
            replayed += n
        }
        let replaySecs = Double(monotonicNanos() - r0) / 1e9
        let t = replayer.totals
        printLine(String(format: "outbox: %d writes over %d users appended in %.2f s (%.0f/s, pipelined); replayed in %.2f s (%.0f writes/s, one replayer): applied %d, duplicates %d, failed %d",
                         writes, users.count, appendSecs, Double(writes) / appendSecs, replaySecs, Double(replayed) / replaySecs, t.applied, t.duplicates, t.failed))
        // Leave the database as it was.
        _ = try pool.runBlocking { c throws(PGError) in
            try c.query("DELETE FROM presets WHERE user_id = $1 OR user_id LIKE $2", [user.userID, "bench-outbox-\(keys.namespace)-%"])
            try c.query("DELETE FROM preset_writes WHERE user_id LIKE $1", ["bench-outbox-\(keys.namespace)-%"])
        }
        return 0
    }
}
