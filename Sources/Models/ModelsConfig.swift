import JSON
import Runtime

/// One OpenAI-compatible model server the proxy may send requests to.
public struct UpstreamConfig: Sendable, Equatable {
    public var name: String
    public var url: UpstreamURL
    /// The model name to ask it for.
    public var model: String
    public var region: String
    /// Read from the environment variable the file names; never written in the file itself.
    public var apiKey: String?
    public var apiKeyEnv: String?
    /// Requests in flight at most (past it, the upstream is skipped).
    public var maxInFlight = 64
    public var connectTimeoutMs = 2000
    /// From sending the request to the first token.
    public var firstTokenTimeoutMs = 15_000
    /// Between two bytes of a stream once it flows.
    public var idleTimeoutMs = 10_000
    /// The whole stream, from sending the request to its last token (a trickle of bytes or
    /// comments cannot hold a client, its lease and a slot beyond it).
    public var streamTimeoutMs = 300_000
    /// `chat` (POST /chat/completions) or `completions` (POST /completions).
    public var api = "completions"
    /// TLS: a PEM bundle to trust instead of the system's.
    public var caFile: String?
}

/// `http://host:port/base` or `https://…`, parsed once. Only what can go into a request head
/// safely is accepted: no spaces or control characters anywhere (they would split the head).
public struct UpstreamURL: Sendable, Equatable, CustomStringConvertible {
    public var tls: Bool
    public var host: String
    public var port: Int
    /// Without a trailing slash ("/v1").
    public var basePath: String

    public init?(_ s: String) {
        guard let u = try? UpstreamURL.parse(s) else { return nil }
        self = u
    }

    private init(tls: Bool, host: String, port: Int, basePath: String) {
        self.tls = tls
        self.host = host
        self.port = port
        self.basePath = basePath
    }

    /// The URL, or what is wrong with it.
    public static func parse(_ s: String) throws(ConfigError) -> UpstreamURL {
        let tls: Bool
        var rest: Substring
        if s.hasPrefix("http://") { tls = false; rest = s.dropFirst(7) } else if s.hasPrefix("https://") { tls = true; rest = s.dropFirst(8) } else {
            throw ConfigError("an http:// or https:// URL (host[:port][/path])")
        }
        guard s.utf8.allSatisfy({ $0 > 32 && $0 < 127 }) else {
            throw ConfigError("spaces, control characters and non-ASCII characters are not allowed in a URL")
        }
        let slash = rest.firstIndex(of: "/") ?? rest.endIndex
        let authority = rest[..<slash]
        var path = String(rest[slash...])
        while path.hasSuffix("/") { path.removeLast() }
        guard !authority.isEmpty else { throw ConfigError("the URL has no host") }
        guard !authority.contains("@") else { throw ConfigError("user information in the URL is not allowed (use api_key_env)") }
        guard !path.contains("?"), !path.contains("#") else { throw ConfigError("a query or fragment is not allowed in the URL") }
        guard !authority.hasPrefix("[") else { throw ConfigError("IPv6 literals are not supported; use an IPv4 address or a host name") }
        let host: String, port: Int
        if let colon = authority.lastIndex(of: ":") {
            guard let p = Int(authority[authority.index(after: colon)...]), (1...65535).contains(p) else {
                throw ConfigError("the port must be a number in 1...65535")
            }
            host = String(authority[..<colon])
            port = p
        } else {
            host = String(authority)
            port = tls ? 443 : 80
        }
        // A host name (letters, digits, '-', '.', and '_' as container and service names use) or
        // an IPv4 address: nothing that could end the request line or the Host header.
        guard !host.isEmpty, host.utf8.count <= 253, host.utf8.allSatisfy({ c in
            (c >= 48 && c <= 57) || (c >= 65 && c <= 90) || (c >= 97 && c <= 122) || c == 45 || c == 46 || c == 95
        }), !host.hasPrefix("-"), !host.hasPrefix(".") else {
            throw ConfigError("\"\(host)\" is not a host name or IPv4 address")
        }
        return UpstreamURL(tls: tls, host: host, port: port, basePath: path)
    }

    public var description: String { "\(tls ? "https" : "http")://\(host):\(port)\(basePath)" }
}

/// The models file (`--models FILE`): upstreams, and aliases that map a public model name to
/// ordered groups of upstreams (primary regions first, then fallback models).
public struct ModelsConfig: Sendable {
    public var upstreams: [UpstreamConfig] = []
    /// alias → groups → upstream names ("builtin" is the model inside the node).
    public var aliases: [(name: String, groups: [[String]])] = []
    /// At most this share of requests is hedged to a second upstream.
    public var hedgeFraction = 0.1
    /// An upstream that carried traffic and has been idle this long gets a tiny request (0: off).
    public var warmupIdleMs = 0
    public var breaker = BreakerPolicy()
    /// Fields of a client's request never forwarded to model servers (refused with 400 naming
    /// them): what the operator will not let clients spend their account on (`service_tier`, …).
    public var deniedFields: Set<String> = []
    /// The most choices (`n`) one request may ask a model server for.
    public var maxChoices = 8

    public init() {}

    public static let builtin = "builtin"

    public var publicModels: [String] { aliases.map(\.name) }

    /// Aliases with at least one upstream model server in them: their requests are forwarded.
    public var upstreamModels: Set<String> {
        Set(aliases.filter { $0.groups.contains { $0.contains { $0 != ModelsConfig.builtin } } }.map(\.name))
    }

    /// Reads and checks a models file; every mistake is named (the node refuses to start).
    public static func load(path: String, environment: (String) -> String?) throws(ConfigError) -> ModelsConfig {
        guard let bytes = Files.read(path) else { throw ConfigError("cannot read \(path)") }
        let value: JSONValue
        do throws(JSONError) { value = try JSONParser.parse(bytes, rejectDuplicateKeys: true) } catch {
            throw ConfigError("\(path): not valid JSON (\(error))")
        }
        guard let root = value.objectValue else { throw ConfigError("\(path): the top level must be an object") }
        return try parse(root, environment: environment, source: path)
    }

    public static func parse(_ root: JSONObject, environment: (String) -> String?, source: String = "models file") throws(ConfigError) -> ModelsConfig {
        var c = ModelsConfig()
        try unknownKeys(root, ["upstreams", "aliases", "hedge_fraction", "warmup_idle_ms", "breaker", "forwarding"], "\(source)")
        guard let ups = root["upstreams"]?.arrayValue else { throw ConfigError("\(source): upstreams: must be an array") }
        for (i, v) in ups.enumerated() {
            guard let o = v.objectValue else { throw ConfigError("\(source): upstreams[\(i)]: must be an object") }
            let at = "\(source): upstreams[\(i)]"
            try unknownKeys(o, ["name", "base_url", "model", "region", "api_key_env", "max_in_flight", "connect_timeout_ms",
                                "first_token_timeout_ms", "idle_timeout_ms", "stream_timeout_ms", "api", "ca_file"], at)
            guard let name = o["name"]?.stringValue, !name.isEmpty, name.count <= 64,
                  name.utf8.allSatisfy({ ($0 >= 48 && $0 <= 57) || ($0 >= 65 && $0 <= 90) || ($0 >= 97 && $0 <= 122) || $0 == 45 || $0 == 95 }) else {
                throw ConfigError("\(at).name: letters, digits, '-' and '_' (1...64)")
            }
            guard name != builtin else { throw ConfigError("\(at).name: \"builtin\" is the model inside the node; choose another name") }
            guard !c.upstreams.contains(where: { $0.name == name }) else { throw ConfigError("\(at).name: \"\(name)\" is used twice") }
            guard let base = o["base_url"]?.stringValue else { throw ConfigError("\(at).base_url: required, an http:// or https:// URL") }
            let url: UpstreamURL
            do throws(ConfigError) { url = try UpstreamURL.parse(base) } catch { throw ConfigError("\(at).base_url: \(error)") }
            guard let model = o["model"]?.stringValue, !model.isEmpty, model.utf8.count <= 256 else {
                throw ConfigError("\(at).model: required, a model name of 1...256 bytes")
            }
            var u = UpstreamConfig(name: name, url: url, model: model, region: o["region"]?.stringValue ?? "default")
            if let env = o["api_key_env"] {
                guard let e = env.stringValue, !e.isEmpty else { throw ConfigError("\(at).api_key_env: must name an environment variable") }
                guard let key = environment(e), !key.isEmpty else { throw ConfigError("\(at).api_key_env: the environment variable \(e) is not set") }
                // It goes into a request head: a CR, LF or other control character would add headers.
                guard key.utf8.allSatisfy({ $0 >= 32 && $0 != 127 }) else {
                    throw ConfigError("\(at).api_key_env: the value of \(e) contains control characters (a line break?)")
                }
                u.apiKeyEnv = e
                u.apiKey = key
            }
            u.maxInFlight = try int(o, "max_in_flight", at, default: 64, 1...100_000)
            u.connectTimeoutMs = try int(o, "connect_timeout_ms", at, default: 2000, 10...60_000)
            u.firstTokenTimeoutMs = try int(o, "first_token_timeout_ms", at, default: 15_000, 10...600_000)
            u.idleTimeoutMs = try int(o, "idle_timeout_ms", at, default: 10_000, 10...600_000)
            u.streamTimeoutMs = try int(o, "stream_timeout_ms", at, default: 300_000, 100...3_600_000)
            guard u.streamTimeoutMs >= u.firstTokenTimeoutMs else {
                throw ConfigError("\(at).stream_timeout_ms: must be at least first_token_timeout_ms (\(u.firstTokenTimeoutMs))")
            }
            if let api = o["api"] {
                guard let a = api.stringValue, a == "chat" || a == "completions" else { throw ConfigError("\(at).api: \"chat\" or \"completions\"") }
                u.api = a
            }
            if let ca = o["ca_file"] {
                guard url.tls else { throw ConfigError("\(at).ca_file: only for an https:// base_url (this one is http://)") }
                guard let f = ca.stringValue, !f.isEmpty else { throw ConfigError("\(at).ca_file: the path of a PEM file") }
                guard Files.isRegularFile(f), let pem = Files.read(f), !pem.isEmpty else {
                    throw ConfigError("\(at).ca_file: \(f) is not a readable, non-empty file")
                }
                u.caFile = f
            }
            c.upstreams.append(u)
        }
        guard let aliases = root["aliases"]?.objectValue, aliases.count > 0 else {
            throw ConfigError("\(source): aliases: must be an object naming at least one model")
        }
        let known = Set(c.upstreams.map(\.name) + [builtin])
        for (alias, v) in aliases.pairs {
            let at = "\(source): aliases.\(alias)"
            guard alias != builtin else {
                throw ConfigError("\(at): \"builtin\" is the model inside the node and cannot be an alias; choose another name")
            }
            guard !alias.isEmpty, alias.count <= 128, !alias.unicodeScalars.contains(where: { $0.value < 0x21 || $0.value == 0x7F }) else {
                throw ConfigError("\(at): a model name without spaces or control characters")
            }
            guard let groups = v.arrayValue, !groups.isEmpty else { throw ConfigError("\(at): a list of groups, each a list of upstream names") }
            var parsed: [[String]] = []
            for (gi, g) in groups.enumerated() {
                guard let names = g.arrayValue?.compactMap(\.stringValue), names.count == g.arrayValue?.count, !names.isEmpty else {
                    throw ConfigError("\(at)[\(gi)]: a non-empty list of upstream names")
                }
                for n in names where !known.contains(n) { throw ConfigError("\(at)[\(gi)]: no upstream named \"\(n)\"") }
                parsed.append(names)
            }
            c.aliases.append((alias, parsed))
        }
        if let h = root["hedge_fraction"] {
            guard let f = h.doubleValue, (0...1).contains(f) else { throw ConfigError("\(source): hedge_fraction: must be a number in 0...1") }
            c.hedgeFraction = f
        }
        c.warmupIdleMs = try int(root, "warmup_idle_ms", source, default: 0, 0...3_600_000)
        if let b = root["breaker"]?.objectValue {
            let at = "\(source): breaker"
            try unknownKeys(b, ["consecutive_failures", "open_ms", "probes_to_close"], at)
            c.breaker.consecutiveFailures = try int(b, "consecutive_failures", at, default: 3, 1...1000)
            c.breaker.openNanos = UInt64(try int(b, "open_ms", at, default: 1000, 10...600_000)) * 1_000_000
            c.breaker.probesToClose = try int(b, "probes_to_close", at, default: 2, 1...100)
        }
        if let f = root["forwarding"] {
            let at = "\(source): forwarding"
            guard let o = f.objectValue else { throw ConfigError("\(at): must be an object") }
            try unknownKeys(o, ["deny_fields", "max_n"], at)
            if let d = o["deny_fields"] {
                guard let list = d.arrayValue, list.count <= 256 else { throw ConfigError("\(at).deny_fields: a list of field names") }
                for (i, v) in list.enumerated() {
                    guard let name = v.stringValue, !name.isEmpty, name.utf8.count <= 128 else {
                        throw ConfigError("\(at).deny_fields[\(i)]: a field name of 1...128 bytes")
                    }
                    guard !["model", "messages", "prompt", "stream"].contains(name) else {
                        throw ConfigError("\(at).deny_fields[\(i)]: \"\(name)\" is needed by every request")
                    }
                    c.deniedFields.insert(name)
                }
            }
            c.maxChoices = try int(o, "max_n", at, default: 8, 1...8)
        }
        return c
    }

    static func unknownKeys(_ o: JSONObject, _ allowed: [String], _ at: String) throws(ConfigError) {
        for k in o.keys where !allowed.contains(k) { throw ConfigError("\(at): unknown field \"\(k)\"") }
    }

    static func int(_ o: JSONObject, _ key: String, _ at: String, default d: Int, _ range: ClosedRange<Int>) throws(ConfigError) -> Int {
        guard let v = o[key] else { return d }
        guard let i = v.intValue, range.contains(i) else { throw ConfigError("\(at).\(key): must be an integer in \(range.lowerBound)...\(range.upperBound)") }
        return i
    }
}

public struct ConfigError: Error, CustomStringConvertible, Sendable {
    public let description: String
    public init(_ d: String) { description = d }
}
