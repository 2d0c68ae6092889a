import Domain
import JSON
import Storage
import RedisCoordination
import Runtime
#if canImport(Glibc)
import Glibc
#endif

/// `playground migrate` and `playground admin keys create|list|revoke|check`.
enum AdminCommand {
    static let migrateSpec = CommandSpec("migrate", summary: "Applies sql/NNN_*.sql in order (a node also does this at start).", flags: [
        .option("database-url", "URL", "PostgreSQL (or DATABASE_URL)"),
        .option("sql-dir", "DIR", default: ProjectPaths.directory("sql", marker: "001_schema.sql"), "migrations"),
    ])

    static let spec = CommandSpec("admin", summary: """
        Manages API keys (PostgreSQL) and quota overrides (Redis):
          admin keys create --user U [--org O]   prints a new key once (only its hash is stored)
          admin keys list [--user U]             every key, revoked ones too
          admin keys revoke ID|PREFIX            revokes at once, on every node (by ID also while the database is down)
          admin keys check --key K               exit 0 if the key is valid, 1 if not
          admin quota set --user U [--rpm N] [--concurrency N] [--ttl 1h]
                                                 overrides U's limits on every node from the next request
          admin quota get --user U | clear --user U | list
          admin status [--fleet F]               live nodes, job backlog, pending and dead-lettered jobs, leases in use,
                                                 preset writes and revocations waiting for the database
        """, usage: "keys|quota|status …", maxPositionals: 3, flags: [
        .option("database-url", "URL", "PostgreSQL (or DATABASE_URL)"),
        .option("redis-url", "URL", "Redis (or REDIS_URL)"),
        .option("fleet", "NAME", default: "main", "status: which fleet on that Redis"),
        .option("rpm", "N", "quota set: requests per minute"),
        .option("concurrency", "N", "quota set: generations at once"),
        .option("ttl", "DURATION", "quota set: the override ends after this (30s, 10m, 1h, 2d); default: never"),
        .option("user", "U", "the key's user (create), or only this user's keys (list)"),
        .option("org", "O", "the key's organisation (create)"),
        .option("key", "K", "the key to check (check)"),
    ])

    static func connection(_ a: Arguments) throws -> PGConnection {
        guard let url = a.optionalString("database-url") ?? Arguments.environment("DATABASE_URL") else {
            throw ArgumentError(message: "set DATABASE_URL or --database-url")
        }
        do { return try PGConnection(url: url) } catch {
            throw ArgumentError(message: "cannot connect to the database: \(error.message)")
        }
    }

    static func migrate(_ a: Arguments) throws -> Int32 {
        let conn = try connection(a)
        let dir = a.string("sql-dir")
        let applied = try Migrations.apply(conn, directory: dir)
        printLine(applied.isEmpty ? "migrations: up to date" : "migrations applied: " + applied.map(\.name).joined(separator: ", "))
        return 0
    }

    static func run(_ a: Arguments) throws -> Int32 {
        switch a.positional.first {
        case "quota": return try QuotaAdmin.run(a)
        case "status": return try QuotaAdmin.status(a)
        default: break
        }
        let words = a.positional
        guard words.count >= 2, words[0] == "keys" else {
            throw ArgumentError(message: "usage: playground admin keys create --user U [--org O] | list [--user U] | revoke ID|PREFIX | check --key K")
        }
        let arity = words[1] == "revoke" ? 3 : 2
        guard words.count == arity else {
            throw ArgumentError(message: words.count > arity ? "admin keys \(words[1]): unexpected argument '\(words[arity])'"
                                                               : "usage: playground admin keys revoke ID|PREFIX")
        }
        if words[1] == "revoke" { return try revoke(a, words[2]) }
        let conn = try connection(a)
        switch words[1] {
        case "create":
            let user = try AdminCommand.name(a, "user")
            let org = try a.optionalString("org").map { _ in try AdminCommand.name(a, "org") }
            let (id, key) = try KeyAdmin.create(conn, user: user, org: org)
            printError("created key \(id) for user \(user); it is shown once — store it now:")
            printLine(key)
        case "list":
            let keys = try KeyAdmin.list(conn, user: a.optionalString("user").map { _ in try AdminCommand.name(a, "user") })
            printLine("id\tprefix\tuser\torg\tcreated\trevoked")
            for k in keys {
                printLine("\(k.id)\t\(k.prefix)…\t\(AdminCommand.printable(k.userID))\t\(k.orgID.map(AdminCommand.printable) ?? "-")\t\(k.createdAt)\t\(k.revokedAt ?? "-")")
            }
        case "check":
            guard let key = a.optionalString("key") else { throw ArgumentError(message: "--key is required") }
            return try KeyAdmin.isLive(conn, key: key) ? 0 : 1
        default:
            throw ArgumentError(message: "unknown keys command '\(words[1])'")
        }
        return 0
    }
}

extension AdminCommand {
    /// A user or org name from `--<option>`: required, and checked by the one rule every entry
    /// point shares (Identity.nameProblem), so no list can print a forged line.
    /// A name as a list may print it: as it is if it keeps the rule, else escaped (written by hand
    /// or by an older version), so it can never forge a line or a column.
    static func printable(_ name: String) -> String {
        Identity.nameProblem(name) == nil ? name : name.unicodeScalars.map { $0.escaped(asASCII: true) }.joined()
    }

    static func name(_ a: Arguments, _ option: String) throws -> String {
        guard let v = a.optionalString(option) else { throw ArgumentError(message: "--\(option) is required") }
        if let problem = Identity.nameProblem(v) { throw ArgumentError(message: "--\(option): \(problem)") }
        return v
    }

    /// Revokes in the database (nodes hear it through LISTEN) and in the shared identity cache
    /// (so no node honours the key from the cache during an outage). While the database is down a
    /// key id is revoked in the cache alone and recorded in the database by a node's replayer
    /// once it is back.
    static func revoke(_ a: Arguments, _ target: String) throws -> Int32 {
        guard let url = a.optionalString("database-url") ?? Arguments.environment("DATABASE_URL") else {
            throw ArgumentError(message: "set DATABASE_URL or --database-url")
        }
        let keys = PresetCacheKeys(namespace: PresetCacheKeys.namespace(forDatabaseURL: url))
        let hasRedis = a.optionalString("redis-url") != nil || Arguments.environment("REDIS_URL") != nil
        let conn: PGConnection
        do { conn = try PGConnection(url: url) } catch {
            guard let id = Int64(target), id > 0 else {
                printError("the database is down (\(error.message)); revoke by key id (as `admin keys list` shows) to revoke through the shared cache")
                return 1
            }
            guard hasRedis else {
                printError("the database is down (\(error.message)) and no REDIS_URL is set: cannot revoke now")
                return 1
            }
            let redis = try QuotaAdmin.redis(a)
            defer { redis.close() }
            try FleetAdmin.revokeInCache(redis, keys: keys, keyID: id, untilRecorded: true)
            printLine("revoked key \(id) in the shared cache; the database is down and records it when it is back")
            return 0
        }
        let ids = try KeyAdmin.revoke(conn, idOrPrefix: target)
        guard !ids.isEmpty else {
            printError("no active key matches \(target)")
            return 1
        }
        if hasRedis {
            do {
                let redis = try QuotaAdmin.redis(a)
                defer { redis.close() }
                for id in ids { try FleetAdmin.revokeInCache(redis, keys: keys, keyID: id, untilRecorded: false) }
            } catch {
                printError("note: the shared identity cache was not told (\(error)); nodes still drop the key through the database")
            }
        }
        printLine("revoked \(ids.count) key(s)")
        return 0
    }
}

/// `admin quota …` and `admin status`: overrides live in Redis at {u:<user>}:quota, read by
/// admit.lua on the user's next request on every node.
enum QuotaAdmin {
    static func redis(_ a: Arguments) throws -> BlockingRedis {
        guard let url = a.optionalString("redis-url") ?? Arguments.environment("REDIS_URL") else {
            throw ArgumentError(message: "set REDIS_URL or --redis-url")
        }
        guard let e = RedisEndpoint(url: url) else { throw ArgumentError(message: "--redis-url must look like redis://[:password@]host:port[/db] or redis-cluster://[:password@]host:port[,host:port…]") }
        do { return try BlockingRedis(endpoint: e) } catch {
            throw OperationalError(description: "cannot reach Redis at \(e.masked)")
        }
    }

    static func user(_ a: Arguments) throws -> String { try AdminCommand.name(a, "user") }

    /// 30s, 10m, 1h, 2d (or plain seconds) → milliseconds.
    static func duration(_ s: String) -> Int? {
        let units: [Character: Int] = ["s": 1000, "m": 60_000, "h": 3_600_000, "d": 86_400_000]
        if let u = s.last, let mult = units[u], let n = Int(s.dropLast()), n > 0, n <= 366 * 86_400_000 / mult { return n * mult }
        if let n = Int(s), n > 0, n <= 366 * 86_400 { return n * 1000 }
        return nil
    }

    static func positive(_ a: Arguments, _ name: String) throws -> Int? {
        guard let s = a.optionalString(name) else { return nil }
        guard let n = Int(s), (1...1_000_000_000).contains(n) else { throw ArgumentError(message: "--\(name) must be a whole number ≥ 1") }
        return n
    }

    static func run(_ a: Arguments) throws -> Int32 {
        let words = a.positional
        guard words.count == 2 else { throw ArgumentError(message: "usage: playground admin quota set|get|clear|list") }
        switch words[1] {
        case "set":
            let u = try user(a)
            let rpm = try positive(a, "rpm"), conc = try positive(a, "concurrency")
            guard rpm != nil || conc != nil else { throw ArgumentError(message: "quota set needs --rpm and/or --concurrency") }
            var ttlMs: Int?
            if let t = a.optionalString("ttl") {
                guard let ms = duration(t) else { throw ArgumentError(message: "--ttl must be a duration such as 30s, 10m, 1h or 2d") }
                ttlMs = ms
            }
            let r = try redis(a)
            defer { r.close() }
            try FleetAdmin.setQuota(r, user: u, rpm: rpm, concurrency: conc, ttlMs: ttlMs)
            printLine(try describe(r, u))
        case "get":
            let u = try user(a)
            let r = try redis(a)
            defer { r.close() }
            printLine(try describe(r, u))
        case "clear":
            let u = try user(a)
            let r = try redis(a)
            defer { r.close() }
            printLine(try FleetAdmin.clearQuota(r, user: u) ? "\(u): override cleared; the node defaults apply" : "\(u): no override")
        case "list":
            let r = try redis(a)
            defer { r.close() }
            printLine("user\trpm\tconcurrency\texpires")
            for u in try FleetAdmin.quotaUsers(r) {
                // Written by something other than this command (which refuses such names): shown
                // escaped, never as a line of its own.
                guard Identity.nameProblem(u) == nil else {
                    printLine("\(AdminCommand.printable(u))\t(not a valid user name: clear it with redis-cli)")
                    continue
                }
                printLine(try row(r, u))
            }
        default:
            throw ArgumentError(message: "unknown quota command '\(words[1])' (set, get, clear, list)")
        }
        return 0
    }

    static func fields(_ r: BlockingRedis, _ u: String) throws -> (rpm: String, conc: String, expires: String) {
        let q = try FleetAdmin.quota(r, user: u)
        let expires = q.ttlMs == -1 ? "never" : q.ttlMs >= 0 ? "in \((q.ttlMs + 999) / 1000) s" : "-"
        return (q.rpm ?? "default", q.concurrency ?? "default", expires)
    }

    static func describe(_ r: BlockingRedis, _ u: String) throws -> String {
        let f = try fields(r, u)
        if f.expires == "-" { return "\(u): no override (the node defaults apply)" }
        return "\(u): rpm \(f.rpm), concurrency \(f.conc), expires \(f.expires)"
    }

    static func row(_ r: BlockingRedis, _ u: String) throws -> String {
        let f = try fields(r, u)
        return "\(u)\t\(f.rpm)\t\(f.conc)\t\(f.expires)"
    }

    /// Live nodes (heartbeats), the job queue, and concurrency leases in use.
    static func status(_ a: Arguments) throws -> Int32 {
        guard a.positional.count == 1 else { throw ArgumentError(message: "admin status: unexpected argument '\(a.positional[1])'") }
        let fleet = a.string("fleet")
        guard FleetKeys.isValidName(fleet) else { throw ArgumentError(message: "--fleet: letters, digits, '-' and '_' only (1...64)") }
        let r = try redis(a)
        defer { r.close() }
        let keys = FleetKeys(fleet: fleet, shards: try FleetAdmin.shards(r, fleet: fleet))
        // The preset outbox of the database DATABASE_URL names (its keys carry that database's name).
        let presets = (a.optionalString("database-url") ?? Arguments.environment("DATABASE_URL")).map {
            PresetCacheKeys(namespace: PresetCacheKeys.namespace(forDatabaseURL: $0))
        }
        let s = try FleetAdmin.status(r, fleet: keys, presets: presets)
        let workers = s.nodes.filter { $0.role == "worker" || $0.role == "serve" }.count
        printLine("fleet \(fleet): \(s.nodes.count) live nodes, \(workers) running generations" + (workers == 0 ? " (no capacity: completions are refused at once)" : ""))
        var upstreamLines: [String] = []
        for n in s.nodes {
            printLine("  \(n.id)\t\(n.role)")
            // Workers with a models file publish their upstreams' state.
            for u in n.upstreams {
                func v(_ k: String) -> String {
                    guard let x = u[k] else { return "-" }
                    if let s = x.stringValue { return s }
                    if let i = x.intValue { return "\(i)" }
                    if let d = x.doubleValue { return "\(d)" }
                    return "-"
                }
                upstreamLines.append("  \(v("name"))\t\(v("region"))\t\(v("state"))\tin flight \(v("in_flight"))\trequests \(v("requests"))\terrors \(v("errors"))\tthrottled \(v("throttled"))\tttft ewma \(v("ttft_ewma_ms")) ms p95 \(v("ttft_p95_ms")) ms\thedges \(v("hedges"))\tretries \(v("retries"))\twarmups \(v("warmups"))\t(seen by \(n.id))")
            }
        }
        if !upstreamLines.isEmpty {
            printLine("model upstreams:")
            for l in upstreamLines { printLine(l) }
        }
        printLine("jobs: backlog \(s.backlog), pending \(s.pending), dead-lettered \(s.deadLettered)"
                  + (s.shards.isEmpty ? "" : " over \(s.shards.count) shards"))
        for (i, sh) in s.shards.enumerated() {
            printLine("  shard \(i)\tbacklog \(sh.backlog)\tpending \(sh.pending)\tdead-lettered \(sh.dead)")
        }
        printLine("leases in use: \(s.leases) (\(s.leaseUsers) users)")
        if let o = s.outbox {
            printLine("preset writes waiting for the database: \(o.writes) (\(o.users) users); revocations waiting: \(o.revocations)")
        }
        return 0
    }
}
