import PresetStore
import Runtime

/// `playground migrate` and `playground admin keys create|list|revoke|check`.
enum AdminCommand {
    static let migrateSpec = CommandSpec("migrate", summary: "Applies sql/NNN_*.sql in order (a node also does this at start).", flags: [
        .option("database-url", "URL", "PostgreSQL (or DATABASE_URL)"),
        .option("sql-dir", "DIR", default: NodeConfig.projectDir("sql", marker: "001_schema.sql"), "migrations"),
    ])

    static let spec = CommandSpec("admin", summary: """
        Manages API keys:
          admin keys create --user U [--org O]   prints a new key once (only its hash is stored)
          admin keys list [--user U]             every key, revoked ones too
          admin keys revoke ID|PREFIX            revokes at once, on every node
          admin keys check --key K               exit 0 if the key is valid, 1 if not
        """, usage: "keys create|list|revoke|check", maxPositionals: 3, flags: [
        .option("database-url", "URL", "PostgreSQL (or DATABASE_URL)"),
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
        let words = a.positional
        guard words.count >= 2, words[0] == "keys" else {
            throw ArgumentError(message: "usage: playground admin keys create --user U [--org O] | list [--user U] | revoke ID|PREFIX | check --key K")
        }
        let arity = words[1] == "revoke" ? 3 : 2
        guard words.count == arity else {
            throw ArgumentError(message: words.count > arity ? "admin keys \(words[1]): unexpected argument '\(words[arity])'"
                                                               : "usage: playground admin keys revoke ID|PREFIX")
        }
        let conn = try connection(a)
        switch words[1] {
        case "create":
            guard let user = a.optionalString("user"), !user.isEmpty, user.utf8.count <= 200 else {
                throw ArgumentError(message: "--user is required (at most 200 bytes)")
            }
            let (id, key) = try KeyAdmin.create(conn, user: user, org: a.optionalString("org"))
            printError("created key \(id) for user \(user); it is shown once — store it now:")
            printLine(key)
        case "list":
            let keys = try KeyAdmin.list(conn, user: a.optionalString("user"))
            printLine("id\tprefix\tuser\torg\tcreated\trevoked")
            for k in keys {
                printLine("\(k.id)\t\(k.prefix)…\t\(k.userID)\t\(k.orgID ?? "-")\t\(k.createdAt)\t\(k.revokedAt ?? "-")")
            }
        case "revoke":
            guard words.count >= 3 else { throw ArgumentError(message: "usage: playground admin keys revoke ID|PREFIX") }
            let n = try KeyAdmin.revoke(conn, idOrPrefix: words[2])
            guard n > 0 else {
                printError("no active key matches \(words[2])")
                return 1
            }
            printLine("revoked \(n) key(s)")
        case "check":
            guard let key = a.optionalString("key") else { throw ArgumentError(message: "--key is required") }
            return try IdentityStoreCheck.valid(conn, key: key) ? 0 : 1
        default:
            throw ArgumentError(message: "unknown keys command '\(words[1])'")
        }
        return 0
    }
}

enum IdentityStoreCheck {
    static func valid(_ conn: PGConnection, key: String) throws -> Bool {
        guard Credentials.looksValid(key) else { return false }
        return try conn.query("SELECT 1 FROM api_keys WHERE key_hash = $1 AND revoked_at IS NULL",
                              [Credentials.bytea(Credentials.sha256(key))]).count == 1
    }
}
