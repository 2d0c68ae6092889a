/// Where Redis is: `redis://[:password@]host:port[/db]` (one server) or
/// `redis-cluster://[:password@]host:port[,host:port…]` (a Redis Cluster, given by seed nodes; the
/// client learns the rest from `CLUSTER SLOTS`; a cluster has database 0 only).
public struct RedisEndpoint: Sendable, Equatable {
    public var host = "127.0.0.1"
    public var port = 6379
    public var db = 0
    public var password: String?
    /// The seed nodes of a cluster; empty for one server.
    public var seeds: [ClusterSlots.Node] = []

    public var isCluster: Bool { !seeds.isEmpty }

    public init(host: String = "127.0.0.1", port: Int = 6379, db: Int = 0, password: String? = nil) {
        self.host = host
        self.port = port
        self.db = db
        self.password = password
    }

    /// A cluster given by its seeds.
    public init(clusterSeeds: [ClusterSlots.Node], password: String? = nil) {
        precondition(!clusterSeeds.isEmpty)
        seeds = clusterSeeds
        host = clusterSeeds[0].host
        port = clusterSeeds[0].port
        self.password = password
    }

    public init?(url: String) {
        let cluster: Bool
        var rest: Substring
        if url.hasPrefix("redis://") {
            cluster = false
            rest = Substring(url.dropFirst(8))
        } else if url.hasPrefix("redis-cluster://") {
            cluster = true
            rest = Substring(url.dropFirst(16))
        } else {
            return nil
        }
        if let at = rest.lastIndex(of: "@") {
            let auth = rest[..<at]
            password = String(auth.split(separator: ":", maxSplits: 1, omittingEmptySubsequences: false).last ?? "")
            if password?.isEmpty == true { password = nil }
            rest = rest[rest.index(after: at)...]
        }
        if let slash = rest.firstIndex(of: "/") {
            let d = rest[rest.index(after: slash)...]
            if !d.isEmpty { guard let n = Int(d), n >= 0 else { return nil }; db = n }
            rest = rest[..<slash]
        }
        if cluster {
            guard db == 0 else { return nil }  // a cluster has only database 0
            var nodes: [ClusterSlots.Node] = []
            for part in rest.split(separator: ",", omittingEmptySubsequences: false) {
                guard let (h, p) = RedisEndpoint.hostPort(part, defaultPort: 6379), !h.isEmpty else { return nil }
                nodes.append(ClusterSlots.Node(host: h, port: p))
            }
            guard !nodes.isEmpty else { return nil }
            seeds = nodes
            host = nodes[0].host
            port = nodes[0].port
        } else {
            guard !rest.contains(","), let (h, p) = RedisEndpoint.hostPort(rest, defaultPort: 6379) else { return nil }
            if !h.isEmpty { host = h }
            port = p
        }
    }

    private static func hostPort(_ s: Substring, defaultPort: Int) -> (String, Int)? {
        // [v6-address]:port, host:port, host
        if s.hasPrefix("["), let close = s.firstIndex(of: "]") {
            let host = String(s[s.index(after: s.startIndex)..<close])
            let rest = s[s.index(after: close)...]
            if rest.isEmpty { return (host, defaultPort) }
            guard rest.hasPrefix(":"), let p = Int(rest.dropFirst()), (1...65535).contains(p) else { return nil }
            return (host, p)
        }
        guard let colon = s.lastIndex(of: ":") else { return (String(s), defaultPort) }
        guard let p = Int(s[s.index(after: colon)...]), (1...65535).contains(p) else { return nil }
        return (String(s[..<colon]), p)
    }

    /// One server of a cluster, with the cluster's password.
    func node(_ n: ClusterSlots.Node) -> RedisEndpoint { RedisEndpoint(host: n.host, port: n.port, password: password) }

    public var masked: String {
        let auth = password == nil ? "" : ":***@"
        if isCluster { return "redis-cluster://\(auth)" + seeds.map { "\($0.host):\($0.port)" }.joined(separator: ",") }
        return "redis://\(auth)\(host):\(port)/\(db)"
    }
}
