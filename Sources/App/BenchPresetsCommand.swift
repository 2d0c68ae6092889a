import Dispatch
import Domain
import Foundation
import ModelProxy
import NetCore
import Synchronization
import PresetStore
import Runtime

/// `playground bench-presets`: per-user preset search latency against a seeded database
/// (scripts/bench-presets.sh seeds it), using the product's own statements, plus EXPLAIN ANALYZE.
enum BenchPresetsCommand {
    static let queries = ["sumarize", "translate french", "email", "", "notes", "poem", "sql querys", "lesson plan", "grader"]

    static func run(_ a: Arguments) throws -> Int32 {
        let users = try a.int("users", default: 100_000)
        let total = try a.int("queries", default: 3000)
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
