/// Redis Cluster's key routing, pure (no connection): which of the 16,384 hash slots a key is in,
/// which master serves a slot (from `CLUSTER SLOTS`), and what a `MOVED`/`ASK` redirection says.
/// The first seam of running on a cluster (issue 20): every Lua script here keeps its keys under
/// one hash tag (`{u:<user>}`, `{jobs:<fleet>}`, `{fleet:<fleet>}`, `{p:<db>:<user>}`), so each
/// call lands on one slot — `ClusterSlotsTests` checks it for every script's key set.
public enum ClusterSlots {
    public static let count = 16_384

    /// CRC16-CCITT (XMODEM: polynomial 0x1021, initial 0), as Redis Cluster specifies.
    public static func crc16<C: Collection>(_ bytes: C) -> UInt16 where C.Element == UInt8 {
        var crc: UInt16 = 0
        for b in bytes {
            crc ^= UInt16(b) << 8
            for _ in 0..<8 { crc = crc & 0x8000 != 0 ? (crc << 1) ^ 0x1021 : crc << 1 }
        }
        return crc
    }

    /// The part of a key that is hashed: what lies between the first `{` and the next `}` if that
    /// is not empty, else the whole key.
    public static func hashedPart<C: RandomAccessCollection>(_ key: C) -> C.SubSequence where C.Element == UInt8 {
        guard let open = key.firstIndex(of: UInt8(ascii: "{")) else { return key[...] }
        let start = key.index(after: open)
        guard let close = key[start...].firstIndex(of: UInt8(ascii: "}")), close > start else { return key[...] }
        return key[start..<close]
    }

    /// Per command on a cluster: the key's UTF-8 is hashed in place, not copied.
    public static func slot(_ key: String) -> Int {
        var k = key
        return k.withUTF8 { slot(bytes: $0) }
    }

    public static func slot(_ key: [UInt8]) -> Int { slot(bytes: key) }

    static func slot<C: RandomAccessCollection>(bytes: C) -> Int where C.Element == UInt8 { Int(crc16(hashedPart(bytes)) & 0x3FFF) }

    /// The key a command is routed by, or nil for a command without keys (any master answers).
    /// Multi-key commands must keep their keys in one slot (Redis answers CROSSSLOT otherwise):
    /// the first key decides.
    public static func routingKey(_ args: [String]) -> String? {
        guard let name = args.first else { return nil }
        // Our own commands are upper case already: no copy on the hot path.
        switch name.utf8.contains(where: { $0 >= 97 && $0 <= 122 }) ? name.uppercased() : name {
        case "EVALSHA", "EVAL", "EVALSHA_RO", "EVAL_RO", "FCALL":
            guard args.count > 3, let n = Int(args[2]), n > 0 else { return nil }
            return args[3]
        case "XREADGROUP", "XREAD":
            guard let i = args.firstIndex(where: { $0 == "STREAMS" || $0.uppercased() == "STREAMS" }), i + 1 < args.count else { return nil }
            return args[i + 1]
        case "XGROUP", "XINFO", "OBJECT", "MEMORY":
            return args.count > 2 ? args[2] : nil
        case "PING", "TIME", "SCAN", "INFO", "AUTH", "SELECT", "CLUSTER", "ASKING", "SCRIPT", "DBSIZE", "FLUSHALL",
             "FLUSHDB", "CLIENT", "CONFIG", "KEYS", "RANDOMKEY", "WAIT", "PUBLISH":
            return nil
        default:
            return args.count > 1 ? args[1] : nil
        }
    }

    /// A master's address.
    public struct Node: Sendable, Hashable {
        public let host: String
        public let port: Int
        public init(host: String, port: Int) {
            self.host = host
            self.port = port
        }
    }

    /// Which master serves each slot.
    public struct Map: Sendable, Equatable {
        /// Sorted, non-overlapping ranges.
        public private(set) var ranges: [(first: Int, last: Int, master: Node)] = []

        public init() {}

        /// From `CLUSTER SLOTS`: `[[first, last, [host, port, id, …], replicas…], …]`. nil for a
        /// reply of another shape or ranges that overlap or fall outside 0…16383. (Slots no master
        /// serves are allowed: the cluster is then partly down, and `master(for:)` says nil.)
        public init?(clusterSlots reply: RedisReply) {
            guard case .array(let entries) = reply else { return nil }
            var out: [(first: Int, last: Int, master: Node)] = []
            for e in entries {
                guard case .array(let f) = e, f.count >= 3, let first = f[0].integer, let last = f[1].integer,
                      case .array(let m) = f[2], m.count >= 2, let host = m[0].string, let port = m[1].integer,
                      first >= 0, first <= last, last < count, port > 0, port < 65_536 else { return nil }
                out.append((Int(first), Int(last), Node(host: host, port: Int(port))))
            }
            out.sort { $0.first < $1.first }
            for (a, b) in zip(out, out.dropFirst()) where b.first <= a.last { return nil }
            ranges = out
        }

        public func master(for slot: Int) -> Node? {
            var lo = 0, hi = ranges.count - 1
            while lo <= hi {
                let mid = (lo + hi) / 2
                if slot < ranges[mid].first { hi = mid - 1 } else if slot > ranges[mid].last { lo = mid + 1 } else { return ranges[mid].master }
            }
            return nil
        }

        public func master(forKey key: String) -> Node? { master(for: ClusterSlots.slot(key)) }

        /// Every master, once each (a connection per master per loop).
        public var masters: [Node] {
            var seen = Set<Node>()
            return ranges.compactMap { seen.insert($0.master).inserted ? $0.master : nil }
        }

        /// Whether every slot has a master.
        public var coversAllSlots: Bool {
            var next = 0
            for r in ranges {
                guard r.first == next else { return false }
                next = r.last + 1
            }
            return next == count
        }

        public static func == (a: Map, b: Map) -> Bool {
            a.ranges.count == b.ranges.count && zip(a.ranges, b.ranges).allSatisfy { $0.first == $1.first && $0.last == $1.last && $0.master == $1.master }
        }
    }

    /// What an error reply asks of the client.
    public enum Redirect: Sendable, Equatable {
        /// The slot lives elsewhere for good: refresh the map, retry there.
        case moved(slot: Int, to: Node)
        /// The slot is migrating: send `ASKING` then the command to that node, once.
        case ask(slot: Int, to: Node)
        /// Retry after a short pause (a resharding step, or the cluster is down): bounded backoff.
        case tryAgain
        case clusterDown

        /// `MOVED 3999 127.0.0.1:6381`, `ASK 3999 [::1]:6381`, `TRYAGAIN …`, `CLUSTERDOWN …`; nil
        /// for any other error.
        public init?(error: String) {
            let parts = error.split(separator: " ", omittingEmptySubsequences: true)
            guard let kind = parts.first else { return nil }
            switch kind {
            case "TRYAGAIN": self = .tryAgain
            case "CLUSTERDOWN": self = .clusterDown
            case "MOVED", "ASK":
                guard parts.count == 3, let slot = Int(parts[1]), slot >= 0, slot < ClusterSlots.count,
                      let colon = parts[2].lastIndex(of: ":"), let port = Int(parts[2][parts[2].index(after: colon)...]),
                      port > 0, port < 65_536 else { return nil }
                var host = String(parts[2][..<colon])
                if host.hasPrefix("["), host.hasSuffix("]") { host = String(host.dropFirst().dropLast()) }
                // An empty host means "the node you asked" (Redis 7 with cluster-preferred-endpoint-type unknown-endpoint).
                let node = Node(host: host, port: port)
                self = kind == "MOVED" ? .moved(slot: slot, to: node) : .ask(slot: slot, to: node)
            default: return nil
            }
        }
    }
}
