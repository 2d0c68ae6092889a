import NetCore

/// Handles one request. It answers through the responder, now or later, on the connection's loop.
public typealias HTTPHandler = (HTTPRequest, HTTPResponder) -> Void

/// One table of routes for every transport. Patterns are literal segments or `{name}` captures.
public final class Router: @unchecked Sendable {
    public struct Route {
        let method: String
        let segments: [Segment]
        public let bodyLimit: Int
        public let handler: HTTPHandler
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

    private var routes: [Route] = []
    public let defaultBodyLimit: Int

    public init(defaultBodyLimit: Int = 1 << 20) { self.defaultBodyLimit = defaultBodyLimit }

    public func add(_ method: String, _ pattern: String, bodyLimit: Int? = nil, _ handler: @escaping HTTPHandler) {
        let segs = pattern.split(separator: "/", omittingEmptySubsequences: true).map { s -> Segment in
            if s.first == "{" && s.last == "}" { return .capture(String(s.dropFirst().dropLast())) }
            return .literal(String(s))
        }
        routes.append(Route(method: method, segments: segs, bodyLimit: bodyLimit ?? defaultBodyLimit, handler: handler))
    }

    public func get(_ p: String, _ h: @escaping HTTPHandler) { add("GET", p, h) }
    public func post(_ p: String, bodyLimit: Int? = nil, _ h: @escaping HTTPHandler) { add("POST", p, bodyLimit: bodyLimit, h) }

    public func match(method: String, path: Substring) -> Match {
        let parts = path.split(separator: "/", omittingEmptySubsequences: true)
        var allowed: [String] = []
        for r in routes where r.segments.count == parts.count {
            var caps: [String: String] = [:]
            var ok = true
            for (seg, part) in zip(r.segments, parts) {
                switch seg {
                case .literal(let l): if l != part { ok = false }
                case .capture(let n): caps[n] = PercentDecoding.decode(part)
                }
                if !ok { break }
            }
            guard ok else { continue }
            if r.method == method || (method == "HEAD" && r.method == "GET") { return .found(r, caps) }
            allowed.append(r.method)
        }
        return allowed.isEmpty ? .notFound : .methodNotAllowed(allowed: allowed)
    }
}
