import Foundation
import Glibc

/// A local Redis Cluster (3 masters, 3 replicas) for a test class, by scripts/redis-cluster.sh.
enum ClusterHarness {
    static let root = URL(fileURLWithPath: #filePath).deletingLastPathComponent().deletingLastPathComponent().deletingLastPathComponent()

    /// Runs scripts/redis-cluster.sh through the shell and returns what it printed. (Not Foundation's
    /// Process: it waits for the daemonized servers' end of its plumbing and never returns.)
    static func sh(_ args: [String]) throws -> String {
        let out = FileManager.default.temporaryDirectory.appendingPathComponent("cluster-out-\(UUID().uuidString)").path
        defer { try? FileManager.default.removeItem(atPath: out) }
        let command = ([root.appendingPathComponent("scripts/redis-cluster.sh").path] + args).map { "'\($0)'" }.joined(separator: " ")
        let status = system(command + " > '\(out)' 2>&1 < /dev/null")
        let text = (try? String(contentsOfFile: out, encoding: .utf8)) ?? ""
        guard status == 0 else { throw NSError(domain: "redis-cluster.sh: \(text)", code: Int(status)) }
        return text.trimmingCharacters(in: .whitespacesAndNewlines)
    }

    /// Starts a cluster on free-looking ports; returns its directory, first port and seed URL.
    static func start() throws -> (dir: String, base: Int, url: String) {
        let dir = FileManager.default.temporaryDirectory.appendingPathComponent("cluster-\(UUID().uuidString)").path
        // Ports and their bus ports (+10000) below the ephemeral range (32768): a bus port taken by
        // some client's socket would fail the start.
        let base = 20_000 + Int.random(in: 0..<450) * 6
        let url = try sh(["start", dir, "\(base)"])
        return (dir, base, url)
    }

    static func stop(_ dir: String) {
        _ = try? sh(["stop", dir])
        try? FileManager.default.removeItem(atPath: dir)
    }

    /// The pid of the server on `port` of a cluster started in `dir`.
    static func pid(_ dir: String, port: Int) -> pid_t? {
        (try? String(contentsOfFile: "\(dir)/\(port)/redis.pid", encoding: .utf8)).flatMap { pid_t($0.trimmingCharacters(in: .whitespacesAndNewlines)) }
    }
}
