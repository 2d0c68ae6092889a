import Runtime
#if canImport(Glibc)
import Glibc
#endif

/// Applies `sql/NNN_name.sql` files in order, each in its own transaction, recording each in
/// `schema_migrations`. Safe to re-run: applied files are skipped. An advisory lock keeps two nodes
/// starting at once from applying the same file twice.
public enum Migrations {
    public struct Applied: Sendable { public let version: Int; public let name: String }

    public static func files(in directory: String) -> [(version: Int, name: String, path: String)] {
        guard let dir = opendir(directory) else { return [] }
        defer { closedir(dir) }
        var out: [(Int, String, String)] = []
        while let e = readdir(dir) {
            let name = withUnsafeBytes(of: e.pointee.d_name) { String(decoding: $0.prefix { $0 != 0 }, as: UTF8.self) }
            guard name.hasSuffix(".sql"), let us = name.firstIndex(of: "_"), let v = Int(name[..<us]) else { continue }
            out.append((v, name, directory + "/" + name))
        }
        return out.sorted { $0.0 < $1.0 }
    }

    /// Returns the files applied by this call.
    public static func apply(_ conn: PGConnection, directory: String) throws(PGError) -> [Applied] {
        let files = files(in: directory)
        guard !files.isEmpty else {
            throw PGError(kind: .query, sqlState: nil, message: "no migrations found in \(directory)")
        }
        try conn.query("SELECT pg_advisory_lock(727274)")
        defer { _ = try? conn.query("SELECT pg_advisory_unlock(727274)") }
        try conn.query("""
            CREATE TABLE IF NOT EXISTS schema_migrations (
                version integer PRIMARY KEY, name text NOT NULL, applied_at timestamptz NOT NULL DEFAULT now())
            """)
        let done = Set(try conn.query("SELECT version FROM schema_migrations").rows.compactMap { $0[0].flatMap(Int.init) })
        var applied: [Applied] = []
        for f in files where !done.contains(f.version) {
            guard let sql = readFile(f.path) else {
                throw PGError(kind: .query, sqlState: nil, message: "cannot read \(f.path)")
            }
            try conn.execute("BEGIN")
            do throws(PGError) {
                try conn.execute(sql)
                try conn.query("INSERT INTO schema_migrations (version, name) VALUES ($1, $2)", ["\(f.version)", f.name])
                try conn.execute("COMMIT")
            } catch {
                _ = try? conn.execute("ROLLBACK")
                throw PGError(kind: error.kind, sqlState: error.sqlState, message: "\(f.name): \(error.message)")
            }
            applied.append(Applied(version: f.version, name: f.name))
        }
        return applied
    }

    static func readFile(_ path: String) -> String? {
        Files.read(path).map { String(decoding: $0, as: UTF8.self) }
    }
}
