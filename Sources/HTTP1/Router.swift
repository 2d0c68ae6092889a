import NetCore

/// Handles one request. It answers through the responder, now or later, on the connection's loop.
public typealias HTTPHandler = (HTTPRequest, HTTPResponder) -> Void

/// Method + path-pattern matching shared by every route table (HTTP and the WebSocket envelope).
/// Patterns are literal segments or `{name}` captures.
public struct RouteTable<Handler> {
    public struct Route {
        public let method: String
        let segments: [Segment]
        public var patternString: String {
            "/" + segments.map { seg -> String in
                switch seg {
                case .literal(let l): return l
                case .capture(let c): return "{\(c)}"
                }
            }.joined(separator: "/")
        }
        public let bodyLimit: Int
        public let handler: Handler
    }

    enum Segment: Equatable {
        case literal(String)
        case capture(String)
    }

    public enum Match {
        case found(Route, [String: String])
        case methodNotAllowed(allowed: [String])
        case notFound
    }

    public private(set) var routes: [Route] = []

    public init() {}

    public mutating func add(_ method: String, _ pattern: String, bodyLimit: Int, _ handler: Handler) {
        let segs = pattern.split(separator: "/", omittingEmptySubsequences: true).map { s -> Segment in
            if s.first == "{" && s.last == "}" { return .capture(String(s.dropFirst().dropLast())) }
            return .literal(String(s))
        }
        routes.append(Route(method: method, segments: segs, bodyLimit: bodyLimit, handler: handler))
    }

    /// The route for `method` among those whose pattern fits `path` most closely: a path that
    /// fits a pattern with more literal segments (`/v1/presets/pending`) is that pattern's, never
    /// also a capture's (`/v1/presets/{id}`), for matching and for the methods a 405 lists.
    public func match(method: String, path: Substring) -> Match {
        let parts = path.split(separator: "/", omittingEmptySubsequences: true)
        var allowed: [String] = []
        var best: (route: Route, caps: [String: String])?
        var bestLiterals = -1
        for r in routes where r.segments.count == parts.count {
            var caps: [String: String] = [:]
            var ok = true
            var literals = 0
            for (seg, part) in zip(r.segments, parts) {
                switch seg {
                case .literal(let l): if l != part { ok = false } else { literals += 1 }
                case .capture(let n): caps[n] = PercentDecoding.decode(part)
                }
                if !ok { break }
            }
            guard ok, literals >= bestLiterals else { continue }
            if literals > bestLiterals {
                bestLiterals = literals
                allowed = []
                best = nil
            }
            if best == nil && (r.method == method || (method == "HEAD" && r.method == "GET")) { best = (r, caps) }
            if !allowed.contains(r.method) { allowed.append(r.method) }
        }
        if let best { return .found(best.route, best.caps) }
        return allowed.isEmpty ? .notFound : .methodNotAllowed(allowed: allowed)
    }
}

/// The HTTP server's routes.
public final class Router: @unchecked Sendable {
    public typealias Route = RouteTable<HTTPHandler>.Route
    public typealias Match = RouteTable<HTTPHandler>.Match
    private var table = RouteTable<HTTPHandler>()
    public let defaultBodyLimit: Int
    /// Answers requests no route matched (e.g. static files); nil → 404/405.
    public var fallback: HTTPHandler?

    public init(defaultBodyLimit: Int = 1 << 20) { self.defaultBodyLimit = defaultBodyLimit }

    public func add(_ method: String, _ pattern: String, bodyLimit: Int? = nil, _ handler: @escaping HTTPHandler) {
        table.add(method, pattern, bodyLimit: bodyLimit ?? defaultBodyLimit, handler)
    }

    public func get(_ p: String, _ h: @escaping HTTPHandler) { add("GET", p, h) }
    public func post(_ p: String, bodyLimit: Int? = nil, _ h: @escaping HTTPHandler) { add("POST", p, bodyLimit: bodyLimit, h) }

    public func match(method: String, path: Substring) -> Match { table.match(method: method, path: path) }
}
