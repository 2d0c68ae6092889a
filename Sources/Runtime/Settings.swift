#if canImport(Glibc)
import Glibc
#endif

/// One flag a command accepts: an option that takes a value, or a switch.
public struct Flag: Sendable {
    public let name: String
    /// What the value looks like in help ("N", "URL"); nil for a switch.
    public let placeholder: String?
    /// Used when neither the flag nor its environment variable is given; nil = no default.
    public let defaultValue: String?
    public let help: String

    public static func option(_ name: String, _ placeholder: String = "VALUE", default value: String? = nil, _ help: String) -> Flag {
        Flag(name: name, placeholder: placeholder, defaultValue: value, help: help)
    }

    public static func toggle(_ name: String, _ help: String) -> Flag {
        Flag(name: name, placeholder: nil, defaultValue: nil, help: help)
    }

    public var isSwitch: Bool { placeholder == nil }
}

/// What a command accepts: its flags (the only ones it takes) and how many positional words.
public struct CommandSpec: Sendable {
    public let name: String
    public let summary: String
    /// Positional words in the usage line, e.g. "keys create|list|revoke ID|check".
    public let usage: String
    public let maxPositionals: Int
    public let flags: [Flag]

    public init(_ name: String, summary: String, usage: String = "", maxPositionals: Int = 0, flags: [Flag]) {
        self.name = name
        self.summary = summary
        self.usage = usage
        self.maxPositionals = maxPositionals
        self.flags = flags
    }

    public func flag(_ name: String) -> Flag? { flags.first { $0.name == name } }

    /// `--help` text: usage, then every flag with its default and its environment variable.
    public var help: String {
        var out = "usage: playground \(name)\(usage.isEmpty ? "" : " " + usage) [flags]\n\n\(summary)\n"
        if !flags.isEmpty { out += "\nflags (each also an environment variable, e.g. --\(flags[0].name) → \(Arguments.envName(flags[0].name))):\n" }
        let rows = flags.map { f in ("  --\(f.name)" + (f.placeholder.map { " \($0)" } ?? ""), f) }
        let width = min(34, (rows.map(\.0.count).max() ?? 0) + 2)
        for (left, f) in rows {
            var line = left.count < width ? left + String(repeating: " ", count: width - left.count) : left + "  "
            line += f.help
            if let d = f.defaultValue { line += " (default: \(d.isEmpty ? "\"\"" : d))" }
            out += line + "\n"
        }
        out += "  --help" + String(repeating: " ", count: max(2, width - 8)) + "this text\n"
        return out
    }
}

/// Command-line flags with environment-variable fallbacks: `--port 8080` or `PLAYGROUND_PORT=8080`.
/// Flags win over the environment; the environment wins over the spec's defaults. Strict: a flag
/// the command does not take, a missing value or an extra word is an error naming it; `--help`
/// anywhere asks for the command's help.
public struct Arguments: Sendable {
    public let spec: CommandSpec
    public private(set) var positional: [String] = []
    private var flags: [String: String] = [:]
    private var switches: Set<String> = []

    public init(_ argv: [String], spec: CommandSpec) throws(ArgumentError) {
        self.spec = spec
        var i = 0
        while i < argv.count {
            let a = argv[i]
            i += 1
            if a == "--help" || a == "-h" { throw ArgumentError(help: spec.help) }
            if a == "--" {
                positional += argv[i...]
                break
            }
            guard a.hasPrefix("-"), a != "-" else {
                positional.append(a)
                continue
            }
            guard a.hasPrefix("--") else { throw ArgumentError(message: "\(spec.name): unknown flag '\(a)' (see playground \(spec.name) --help)") }
            var name = String(a.dropFirst(2))
            var inline: String?
            if let eq = name.firstIndex(of: "=") {
                inline = String(name[name.index(after: eq)...])
                name = String(name[..<eq])
            }
            guard let flag = spec.flag(name) else {
                throw ArgumentError(message: "\(spec.name): unknown flag '--\(name)' (see playground \(spec.name) --help)")
            }
            if flag.isSwitch {
                if let v = inline {
                    guard let b = Arguments.boolValue(v) else { throw ArgumentError(message: "--\(name) is a switch: give it no value, or true/false") }
                    if b { switches.insert(name) } else { flags[name] = "false" }
                } else {
                    switches.insert(name)
                }
            } else if let v = inline {
                flags[name] = v
            } else {
                guard i < argv.count, !argv[i].hasPrefix("--") else {
                    throw ArgumentError(message: "--\(name) needs a value (\(flag.placeholder ?? "VALUE"))")
                }
                flags[name] = argv[i]
                i += 1
            }
        }
        if positional.count > spec.maxPositionals {
            throw ArgumentError(message: "\(spec.name): unexpected argument '\(positional[spec.maxPositionals])' (see playground \(spec.name) --help)")
        }
    }

    public static func envName(_ flag: String) -> String {
        "PLAYGROUND_" + String(flag.uppercased().map { $0 == "-" ? "_" : $0 })
    }

    static func boolValue(_ s: String) -> Bool? {
        switch s.lowercased() {
        case "1", "true", "yes", "on": return true
        case "0", "false", "no", "off", "": return false
        default: return nil
        }
    }

    private func declared(_ name: String) -> Flag {
        guard let f = spec.flag(name) else { preconditionFailure("\(spec.name) reads --\(name), which its spec does not declare") }
        return f
    }

    /// The flag's value, else its environment variable, else nil (the spec's default is not applied).
    public func given(_ name: String) -> String? {
        _ = declared(name)
        if let v = flags[name] { return v }
        if let v = getenv(Arguments.envName(name)) { return String(cString: v) }
        return nil
    }

    /// The value, falling back to the spec's default.
    public func optionalString(_ name: String) -> String? { given(name) ?? declared(name).defaultValue }

    public func string(_ name: String) -> String { optionalString(name) ?? "" }

    public func int(_ name: String) throws(ArgumentError) -> Int {
        guard let s = optionalString(name) else { throw ArgumentError(message: "--\(name) is required") }
        guard let v = Int(s) else { throw ArgumentError(message: "--\(name) expects an integer, got '\(s)'") }
        return v
    }

    public func double(_ name: String) throws(ArgumentError) -> Double {
        guard let s = optionalString(name) else { throw ArgumentError(message: "--\(name) is required") }
        guard let v = Double(s), v.isFinite else { throw ArgumentError(message: "--\(name) expects a number, got '\(s)'") }
        return v
    }

    public func bool(_ name: String) -> Bool {
        precondition(declared(name).isSwitch, "--\(name) is not a switch")
        if switches.contains(name) { return true }
        if flags[name] != nil { return false }
        if let v = getenv(Arguments.envName(name)) { return Arguments.boolValue(String(cString: v)) ?? false }
        return false
    }

    /// A plain environment variable (for conventional names such as DATABASE_URL).
    public static func environment(_ name: String) -> String? {
        guard let v = getenv(name) else { return nil }
        let s = String(cString: v)
        return s.isEmpty ? nil : s
    }
}

public struct ArgumentError: Error, CustomStringConvertible {
    public var message: String
    /// Set when `--help` was asked for: print it to stdout and exit 0.
    public var help: String?
    public init(message: String) { self.message = message }
    public init(help: String) {
        self.message = help
        self.help = help
    }
    public var description: String { message }
}
