import Dispatch
import Domain
import Foundation
import Models
import NetCore
import Synchronization
import Storage
import Runtime

/// `playground bench-presets`: per-user preset search latency against a seeded database
/// (scripts/bench-presets.sh seeds it), the product's search beside the trigram statement it
/// replaced (issue 19), quiet and with concurrent preset writes, plus EXPLAIN ANALYZE.
public enum BenchPresetsCommand {
    /// Words of the seeded names and tags, as typed: exact, misspelled (swaps, drops, short words), half-typed.
    static let queries = ["sumarize", "translate french", "email", "", "notes", "poem", "sql querys", "lesson plan", "grader",
                          "tarnslate", "reivew", "emial", "bse", "sqk", "breinstorm", "proofred", "summ"]

    public static let spec = CommandSpec("bench-presets", summary: "Preset search latency on a seeded database (scripts/bench-presets.sh seeds it).", flags: [
        .option("database-url", "URL", "the seeded PostgreSQL (or DATABASE_URL)"),
        .option("users", "N", default: "100000", "users the seed spread presets over"),
        .option("queries", "N", default: "3000", "searches to time per side and phase"),
        .option("writes-per-second", "N", default: "200", "preset writes (create, update, delete) beside the searches in the second phase"),
        .option("seconds", "S", default: "3", "duration of each side of --compare-pools"),
        .toggle("compare-pools", "thread pool vs non-blocking libpq on the loop, same searches"),
    ])

    struct Sample: Sendable { let query: String; let micros: Int; let rows: Int }

    public static func run(_ a: Arguments) throws -> Int32 {
        if a.bool("compare-pools") { return try comparePools(a) }
        let users = try a.int("users")
        let total = try a.int("queries")
        let writeRate = try a.int("writes-per-second")
        let url = a.optionalString("database-url") ?? Arguments.environment("DATABASE_URL") ?? ""
        let pool = PGPool(url: url, size: 2, logger: Logger(label: "bench", level: .warning))
        pool.start()
        defer { pool.stop() }
        var rng = SeededRandom(seed: 7)
        var plan: [(Identity, String)] = []
        for _ in 0..<total {
            let u = Int(rng.next() % UInt64(users))
            plan.append((Identity(userID: String(format: "user%06d", u), orgID: nil, keyID: 0), queries[Int(rng.next() % UInt64(queries.count))]))
        }
        let work = plan
        let hasLegacy = try pool.runBlocking { conn throws(PGError) in
            try conn.query("SELECT 1 FROM pg_indexes WHERE indexname = 'presets_user_search'").count == 1
        }
        func measure(_ legacy: Bool) throws -> [Sample] {
            try pool.runBlocking { conn throws(PGError) -> [Sample] in
                func once(_ user: Identity, _ q: String) throws(PGError) -> Int {
                    if legacy {
                        let (sql, params) = LegacySearch.statement(user: user, query: q, limit: 20)
                        return min(try conn.query(sql, params).count, 20)
                    }
                    guard case .success(let page) = try PresetRepository.search(conn, user: user, query: q, limit: 20, cursor: nil) else { return 0 }
                    return page.items.count
                }
                for (user, q) in work.prefix(50) { _ = try once(user, q) }
                var out: [Sample] = []
                for (user, q) in work {
                    let t0 = monotonicNanos()
                    let rows = try once(user, q)
                    out.append(Sample(query: q, micros: Int((monotonicNanos() - t0) / 1000), rows: rows))
                }
                return out
            }
        }
        let sides: [(String, Bool)] = (hasLegacy ? [("trigram (before)", true)] : []) + [("typo-tolerant", false)]
        if !hasLegacy { printLine("(no presets_user_search index: the trigram statement of before is not measured)") }
        for (phase, writes) in [("quiet", false), ("with \(writeRate) preset writes/s beside", true)] {
            let writer = writes ? Writer(url: url, users: users, perSecond: writeRate) : nil
            writer?.start()
            var results: [(String, [Sample])] = []
            for (label, legacy) in sides { results.append((label, try measure(legacy))) }
            let written = writer?.stop() ?? 0
            printLine("\npreset search over \(users) users, \(total) queries per side, limit 20, one connection, \(phase)" +
                      (writes ? " (\(written) writes done)" : "") + "; times in ms:")
            printLine("query".padding(22) + results.map { "  " + $0.0.padding(30) }.joined())
            printLine("".padding(22) + results.map { _ in "     n     p50     p99  avg rows " }.joined())
            for q in queries + ["all"] {
                let label = q == "all" ? "all" : q.isEmpty ? "(empty: newest first)" : "\"\(q)\""
                var line = label.padding(22)
                for (_, samples) in results {
                    let xs = q == "all" ? samples : samples.filter { $0.query == q }
                    line += String(format: "  %4d  %6.2f  %6.2f  %8.1f ", xs.count, pct(xs.map(\.micros), 0.5), pct(xs.map(\.micros), 0.99),
                                   Double(xs.map(\.rows).reduce(0, +)) / Double(max(1, xs.count)))
                }
                printLine(line)
            }
        }
        try measurePoolHandOff(pool)
        // The plans PostgreSQL chose, for a search and for the newest-first listing.
        for q in ["tarnslate frnch", ""] {
            let user = Identity(userID: "user000042", orgID: nil, keyID: 0)
            let plan = try pool.runBlocking { conn throws(PGError) -> PGRows in
                let query = SearchQuery(q)
                let expansions = try query.map { q throws(PGError) in q.expansions(dictionary: try PresetRepository.dictionary(conn, user: user)) } ?? []
                let (sql, params) = PresetRepository.searchStatement(user: user, query: query, expansions: expansions, limit: 20, after: nil)
                return try conn.query("EXPLAIN (ANALYZE, BUFFERS, COSTS OFF) " + sql, params)
            }
            printLine("\nEXPLAIN ANALYZE for query \"\(q)\":")
            for r in plan.rows { printLine("  " + (r[0] ?? "")) }
        }
        return 0
    }

    static func pct(_ xs: [Int], _ p: Double) -> Double {
        let s = xs.sorted()
        guard !s.isEmpty else { return 0 }
        return Double(s[min(s.count - 1, Int((Double(s.count) * p).rounded(.up)) - 1)]) / 1000
    }

    /// Preset writes at a steady rate on a connection of their own, over random users: a create,
    /// then an update of it, then its delete (the dictionary rises and falls with them).
    final class Writer: @unchecked Sendable {
        let url: String, users: Int, perSecond: Int
        private let stopped = Atomic<Bool>(false)
        private let count = Atomic<Int>(0)
        private let done = DispatchSemaphore(value: 0)
        init(url: String, users: Int, perSecond: Int) { self.url = url; self.users = users; self.perSecond = perSecond }

        func start() {
            let me = UncheckedBox(self)
            Thread.detachNewThread {
                let w = me.value
                defer { w.done.signal() }
                guard w.perSecond > 0, let conn = try? PGConnection(url: w.url) else { return }
                var rng = SeededRandom(seed: 99)
                let words = ["summarize", "translate", "review", "email", "notes", "poem", "brainstorm", "lesson", "grader", "recipe"]
                let gap = 1_000_000_000 / UInt64(w.perSecond)
                var next = monotonicNanos()
                while !w.stopped.load(ordering: .relaxed) {
                    let user = Identity(userID: String(format: "user%06d", Int(rng.next() % UInt64(w.users))), orgID: nil, keyID: 0)
                    var f = PresetFields()
                    f.name = "\(words[Int(rng.next() % 10)]) \(words[Int(rng.next() % 10)]) bench \(rng.next() % 1_000_000_000)"
                    f.tags = [words[Int(rng.next() % 10)]]
                    f.prompt = "bench write"
                    guard case .success(let p)? = try? PresetRepository.create(conn, user: user, fields: f) else { continue }
                    var change = PresetFields()
                    change.description = "changed: \(words[Int(rng.next() % 10)]) and \(words[Int(rng.next() % 10)])"
                    _ = try? PresetRepository.update(conn, user: user, id: p.id, fields: change)
                    _ = try? PresetRepository.delete(conn, user: user, id: p.id)
                    w.count.add(3, ordering: .relaxed)
                    next += 3 * gap
                    let now = monotonicNanos()
                    if next > now { usleep(UInt32((next - now) / 1000)) } else if now - next > 1_000_000_000 { next = now }
                }
            }
        }

        func stop() -> Int {
            stopped.store(true, ordering: .relaxed)
            done.wait()
            return count.load(ordering: .relaxed)
        }
    }
}

/// The search of before issue 19, for the benchmark's comparison only: every word must occur in
/// lower(name || tags) as a substring or nearly (pg_trgm word similarity ≥ 0.4, `<%`). The bench
/// database keeps its `search_text` column and trigram index (scripts/bench-presets.sh).
enum LegacySearch {
    static func statement(user: Identity, query: String, limit: Int) -> (String, [String?]) {
        let q = query.trimmingWhitespace().lowercased()
        if q.isEmpty {
            return ("SELECT id FROM presets WHERE user_id = $1 ORDER BY created_at DESC, id DESC LIMIT $2", [user.userID, "\(limit + 1)"])
        }
        var words: [String] = []
        for w in q.split(whereSeparator: { $0.isWhitespace }) where words.count < 8 && !words.contains(String(w)) { words.append(String(w)) }
        var params: [String?] = [user.userID, "\(limit + 1)"]
        var conditions: [String] = []
        var scores: [String] = []
        for w in words {
            let like = "%" + w.replacingAll("\\", with: "\\\\").replacingAll("%", with: "\\%").replacingAll("_", with: "\\_") + "%"
            params.append(w)
            let wp = "$\(params.count)"
            params.append(like)
            let lp = "$\(params.count)"
            conditions.append("(search_text LIKE \(lp) ESCAPE '\\' OR \(wp) <% search_text)")
            scores.append("word_similarity(\(wp), search_text) + CASE WHEN search_text LIKE \(lp) ESCAPE '\\' THEN 1 ELSE 0 END")
        }
        return ("""
            SELECT id, ((\(scores.joined(separator: " + "))) / \(words.count))::real AS score FROM presets
            WHERE user_id = $1 AND \(conditions.joined(separator: " AND "))
            ORDER BY score DESC, id DESC LIMIT $2
            """, params)
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
                // (Planned ahead: each search's dictionary read is done here, the ranking statement timed.)
                let picks = (0..<4096).map { _ in
                    (Identity(userID: String(format: "user%06d", Int(rng.next() % UInt64(users))), orgID: nil, keyID: 0),
                     queries[Int(rng.next() % UInt64(queries.count))])
                }
                let statements: [(String, [String?])] = try pool.runBlocking { conn throws(PGError) in
                    var out: [(String, [String?])] = []
                    for (user, q) in picks {
                        let query = SearchQuery(q)
                        let expansions = try query.map { q throws(PGError) in q.expansions(dictionary: try PresetRepository.dictionary(conn, user: user)) } ?? []
                        out.append(PresetRepository.searchStatement(user: user, query: query, expansions: expansions, limit: 20, after: nil))
                    }
                    return out
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
