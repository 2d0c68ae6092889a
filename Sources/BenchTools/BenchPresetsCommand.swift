import Dispatch
import Domain
import Foundation
import Models
import NetCore
import Synchronization
import Storage
import Runtime

/// `playground bench-presets`: per-user preset search latency against a seeded database
/// (scripts/bench-presets.sh seeds it), using the product's own statements, plus EXPLAIN ANALYZE.
public enum BenchPresetsCommand {
    static let queries = ["sumarize", "translate french", "email", "", "notes", "poem", "sql querys", "lesson plan", "grader"]

    public static let spec = CommandSpec("bench-presets", summary: "Preset search latency on a seeded database (scripts/bench-presets.sh seeds it).", flags: [
        .option("database-url", "URL", "the seeded PostgreSQL (or DATABASE_URL)"),
        .option("users", "N", default: "100000", "users the seed spread presets over"),
        .option("queries", "N", default: "3000", "searches to time"),
        .option("seconds", "S", default: "3", "duration of each side of --compare-pools"),
        .toggle("compare-pools", "thread pool vs non-blocking libpq on the loop, same searches"),
    ])

    public static func run(_ a: Arguments) throws -> Int32 {
        if a.bool("compare-pools") { return try comparePools(a) }
        let users = try a.int("users")
        let total = try a.int("queries")
        let pool = PGPool(url: a.optionalString("database-url") ?? Arguments.environment("DATABASE_URL") ?? "", size: 1,
                          logger: Logger(label: "bench", level: .warning))
        pool.start()
        defer { pool.stop() }
        struct Sample: Sendable { let query: String; let micros: Int; let rows: Int }
        var rng = SeededRandom(seed: 7)
        var plan: [(String, String)] = []
        for _ in 0..<total {
            let u = Int(rng.next() % UInt64(users))
            plan.append((String(format: "user%06d", u), queries[Int(rng.next() % UInt64(queries.count))]))
        }
        let work = plan
        let samples: [Sample] = try pool.runBlocking { conn throws(PGError) -> [Sample] in
            var out: [Sample] = []
            // Warm the connection and the planner's cache a little.
            for (user, q) in work.prefix(50) { _ = try PresetRepository.search(conn, user: Identity(userID: user, orgID: nil, keyID: 0), query: q, limit: 20, cursor: nil) }
            for (user, q) in work {
                let t0 = monotonicNanos()
                let r = try PresetRepository.search(conn, user: Identity(userID: user, orgID: nil, keyID: 0), query: q, limit: 20, cursor: nil)
                let us = Int((monotonicNanos() - t0) / 1000)
                if case .success(let page) = r { out.append(Sample(query: q, micros: us, rows: page.items.count)) }
            }
            return out
        }
        func pct(_ xs: [Int], _ p: Double) -> Double {
            let s = xs.sorted()
            guard !s.isEmpty else { return 0 }
            return Double(s[min(s.count - 1, Int((Double(s.count) * p).rounded(.up)) - 1)]) / 1000
        }
        printLine("preset search over \(users) users, \(samples.count) queries, limit 20, one connection, times in ms:")
        printLine("query                 n     p50     p99     max  avg rows")
        for q in queries {
            let xs = samples.filter { $0.query == q }
            let label = q.isEmpty ? "(empty: newest first)" : "\"\(q)\""
            printLine(label.padding(20) + String(format: "%4d  %6.2f  %6.2f  %6.2f  %5.1f", xs.count, pct(xs.map(\.micros), 0.5),
                                                 pct(xs.map(\.micros), 0.99), pct(xs.map(\.micros), 1.0),
                                                 Double(xs.map(\.rows).reduce(0, +)) / Double(max(1, xs.count))))
        }
        let all = samples.map(\.micros)
        printLine(String(format: "all                 %4d  %6.2f  %6.2f  %6.2f", all.count, pct(all, 0.5), pct(all, 0.99), pct(all, 1.0)))
        try measurePoolHandOff(pool)
        // The plans PostgreSQL chose, for a search and for the newest-first listing.
        for q in ["sumarize", ""] {
            let user = Identity(userID: "user000042", orgID: nil, keyID: 0)
            guard let (sql, params) = PresetRepository.searchStatement(user: user, query: q, limit: 20, cursor: nil) else { continue }
            let plan = try pool.runBlocking { conn throws(PGError) in try conn.query("EXPLAIN (ANALYZE, BUFFERS, COSTS OFF) " + sql, params) }
            printLine("\nEXPLAIN ANALYZE for query \"\(q)\":")
            for r in plan.rows { printLine("  " + (r[0] ?? "")) }
        }
        return 0
    }
}

extension BenchPresetsCommand {
    /// Thread pool vs libpq's non-blocking API on the loop, same searches, same number of
    /// connections (4), from one event loop keeping C queries in flight for a few seconds each.
    static func comparePools(_ a: Arguments) throws -> Int32 {
        let users = try a.int("users")
        let seconds = try a.double("seconds")
        let url = a.optionalString("database-url") ?? Arguments.environment("DATABASE_URL") ?? ""
        let group = try EventLoopGroup(count: 1, namePrefix: "cmp")
        group.start()
        defer { group.shutdown() }
        let loop = group.loops[0]
        let pool = PGPool(url: url, size: 4, logger: Logger(label: "bench", level: .warning))
        pool.start()
        defer { pool.stop() }
        let conns = try (0..<4).map { _ throws -> LoopPGConnection in try LoopPGConnection(url: url, loop: loop) }
        let box = UncheckedBox(conns)
        _ = try awaitOnLoop(loop) { for c in box.value { try? c.start() } }

        printLine("thread pool (4 connections, 4 threads) vs non-blocking libpq on the loop (4 connections), preset searches, \(seconds) s each:")
        printLine("mode            in flight   queries/s   p50 ms   p99 ms   CPU µs/query")
        for concurrency in [1, 8, 32] {
            for mode in ["threads", "loop"] {
                let stats = Mutex<(n: Int, lat: [Int], stop: Bool)>((0, [], false))
                let finished = DispatchSemaphore(value: 0)
                let cpu0 = processCPUSeconds()
                let start = monotonicNanos()
                var rng = SeededRandom(seed: UInt64(concurrency))
                let statements: [(String, [String?])] = (0..<4096).compactMap { _ in
                    let user = Identity(userID: String(format: "user%06d", Int(rng.next() % UInt64(users))), orgID: nil, keyID: 0)
                    return PresetRepository.searchStatement(user: user, query: queries[Int(rng.next() % UInt64(queries.count))], limit: 20, cursor: nil)
                }
                let work = UncheckedBox(statements)
                loop.execute {
                    var next = 0
                    var rr = 0
                    var running = concurrency
                    func launch() {
                        if stats.withLock({ $0.stop }) {
                            running -= 1
                            if running == 0 { finished.signal() }
                            return
                        }
                        let (sql, params) = work.value[next % work.value.count]
                        next += 1
                        let t0 = monotonicNanos()
                        let done: (Result<PGRows, PGError>) -> Void = { _ in
                            let us = Int((monotonicNanos() - t0) / 1000)
                            stats.withLock { $0.n += 1; $0.lat.append(us) }
                            launch()
                        }
                        if mode == "threads" {
                            pool.run(on: loop, { conn throws(PGError) in try conn.query(sql, params) }, done: done)
                        } else {
                            // The least-loaded connection, so one slow query does not hold up a queue behind it.
                            let c = box.value.min { $0.load < $1.load }!
                            c.query(sql, params, done: done)
                            rr += 1
                        }
                    }
                    for _ in 0..<concurrency { launch() }
                }
                usleep(UInt32(seconds * 1e6))
                stats.withLock { $0.stop = true }
                finished.wait()
                let elapsed = Double(monotonicNanos() - start) / 1e9
                let cpu = processCPUSeconds() - cpu0
                let (n, lat, _) = stats.withLock { $0 }
                let sorted = lat.sorted()
                printLine(String(format: "%@%9d %11.0f %8.2f %8.2f %14.1f", mode.padding(16), concurrency, Double(n) / elapsed,
                                 Double(sorted[sorted.count / 2]) / 1000, Double(sorted[sorted.count * 99 / 100]) / 1000,
                                 cpu / Double(max(n, 1)) * 1e6))
            }
        }
        return 0
    }

    static func awaitOnLoop(_ loop: EventLoop, _ body: @escaping @Sendable () -> Void) throws -> Bool {
        let s = DispatchSemaphore(value: 0)
        loop.execute { body(); s.signal() }
        s.wait()
        return true
    }

    /// utime + stime of this process (the node side: loop and pool threads), in seconds.
    static func processCPUSeconds() -> Double {
        var u = rusage()
        getrusage(RUSAGE_SELF.rawValue, &u)
        return Double(u.ru_utime.tv_sec + u.ru_stime.tv_sec) + Double(u.ru_utime.tv_usec + u.ru_stime.tv_usec) / 1e6
    }
}

/// What the thread pool adds: `SELECT 1` from an event loop through the pool and back, against
/// the same statement on a connection used directly.
func measurePoolHandOff(_ pool: PGPool) throws {
    let n = 2000
    let direct: [Int] = try pool.runBlocking { conn throws(PGError) -> [Int] in
        var out: [Int] = []
        for _ in 0..<n {
            let t0 = monotonicNanos()
            try conn.query("SELECT 1")
            out.append(Int(monotonicNanos() - t0) / 1000)
        }
        return out
    }
    let group = try EventLoopGroup(count: 1, namePrefix: "hop")
    group.start()
    defer { group.shutdown() }
    let loop = group.loops[0]
    let times = Mutex<[Int]>([])
    let done = DispatchSemaphore(value: 0)
    @Sendable func next(_ left: Int) {
        guard left > 0 else { done.signal(); return }
        let t0 = monotonicNanos()
        pool.run(on: loop, { conn throws(PGError) in try conn.query("SELECT 1").count }) { _ in
            times.withLock { $0.append(Int(monotonicNanos() - t0) / 1000) }
            next(left - 1)
        }
    }
    loop.execute { next(n) }
    done.wait()
    let hopped = times.withLock { $0 }.sorted()
    let d = direct.sorted()
    printLine(String(format: "\nSELECT 1: direct on a connection p50 %d µs, p99 %d µs; from an event loop through the pool and back p50 %d µs, p99 %d µs",
                     d[n / 2], d[n * 99 / 100], hopped[n / 2], hopped[n * 99 / 100]))
}

extension String {
    func padding(_ n: Int) -> String { count >= n ? self : self + String(repeating: " ", count: n - count) }
}
