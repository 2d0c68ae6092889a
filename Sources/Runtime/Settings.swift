#if canImport(Glibc)
import Glibc
#endif

/// Command-line flags with environment-variable fallbacks: `--port 8080` or `PLAYGROUND_PORT=8080`.
/// Flags win over the environment; the environment wins over defaults.
public struct Arguments: Sendable {
    public private(set) var positional: [String] = []
    private var flags: [String: String] = [:]
    private var switches: Set<String> = []

    public init(_ argv: [String]) throws(ArgumentError) {
        var i = 0
        while i < argv.count {
            let a = argv[i]
            if a.hasPrefix("--") {
                let body = String(a.dropFirst(2))
                if let eq = body.firstIndex(of: "=") {
                    flags[String(body[..<eq])] = String(body[body.index(after: eq)...])
                } else if i + 1 < argv.count, !argv[i + 1].hasPrefix("--") {
                    flags[body] = argv[i + 1]
                    i += 1
                } else {
                    switches.insert(body)
                }
            } else {
                positional.append(a)
            }
            i += 1
        }
    }

    static func envName(_ flag: String) -> String {
        "PLAYGROUND_" + flag.uppercased().replacingOccurrences(of: "-", with: "_")
    }

    public func string(_ flag: String, default def: String) -> String {
        if let v = flags[flag] { return v }
        if let v = getenv(Arguments.envName(flag)) { return String(cString: v) }
        return def
    }

    public func optionalString(_ flag: String) -> String? {
        if let v = flags[flag] { return v }
        if let v = getenv(Arguments.envName(flag)) { return String(cString: v) }
        return nil
    }

    public func int(_ flag: String, default def: Int) throws(ArgumentError) -> Int {
        guard let s = optionalString(flag) else { return def }
        guard let v = Int(s) else { throw ArgumentError(message: "--\(flag) expects an integer, got '\(s)'") }
        return v
    }

    public func double(_ flag: String, default def: Double) throws(ArgumentError) -> Double {
        guard let s = optionalString(flag) else { return def }
        guard let v = Double(s) else { throw ArgumentError(message: "--\(flag) expects a number, got '\(s)'") }
        return v
    }

    /// A plain environment variable (for conventional names such as DATABASE_URL).
    public static func environment(_ name: String) -> String? {
        guard let v = getenv(name) else { return nil }
        let s = String(cString: v)
        return s.isEmpty ? nil : s
    }

    public func bool(_ flag: String) -> Bool {
        if switches.contains(flag) { return true }
        if let v = flags[flag] { return v == "1" || v == "true" || v == "yes" }
        if let v = getenv(Arguments.envName(flag)) {
            let s = String(cString: v)
            return s == "1" || s == "true" || s == "yes"
        }
        return false
    }
}

public struct ArgumentError: Error, CustomStringConvertible {
    public var message: String
    public init(message: String) { self.message = message }
    public var description: String { message }
}

extension String {
    func replacingOccurrences(of a: Character, with b: Character) -> String {
        String(map { $0 == a ? b : $0 })
    }
}
