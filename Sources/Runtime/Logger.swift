import CLinux
#if canImport(Glibc)
import Glibc
#endif

/// Severity of a log line; lines below the logger's level are dropped before they are formatted.
public enum LogLevel: Int, Sendable, Comparable {
    case debug = 0, info, warning, error
    public static func < (a: LogLevel, b: LogLevel) -> Bool { a.rawValue < b.rawValue }
    public var name: String { ["debug", "info", "warning", "error"][rawValue] }
    public init?(name: String) {
        switch name.lowercased() {
        case "debug": self = .debug
        case "info": self = .info
        case "warning", "warn": self = .warning
        case "error": self = .error
        default: return nil
        }
    }
}

/// A small value-type logger writing one JSON object per line to stderr.
/// Messages are autoclosures so a dropped line costs nothing to build.
public struct Logger: Sendable {
    public var label: String
    public var level: LogLevel
    public var metadata: [String: String]

    public init(label: String, level: LogLevel = .info, metadata: [String: String] = [:]) {
        self.label = label
        self.level = level
        self.metadata = metadata
    }

    public func with(_ key: String, _ value: String) -> Logger {
        var copy = self
        copy.metadata[key] = value
        return copy
    }

    public func debug(_ message: @autoclosure () -> String, _ extra: @autoclosure () -> [String: String] = [:]) {
        log(.debug, message(), extra())
    }
    public func info(_ message: @autoclosure () -> String, _ extra: @autoclosure () -> [String: String] = [:]) {
        log(.info, message(), extra())
    }
    public func warning(_ message: @autoclosure () -> String, _ extra: @autoclosure () -> [String: String] = [:]) {
        log(.warning, message(), extra())
    }
    public func error(_ message: @autoclosure () -> String, _ extra: @autoclosure () -> [String: String] = [:]) {
        log(.error, message(), extra())
    }

    private func log(_ lvl: LogLevel, _ message: @autoclosure () -> String, _ extra: @autoclosure () -> [String: String]) {
        guard lvl >= level else { return }
        let ms = clinux_realtime_ns() / 1_000_000
        var line = "{\"ts_ms\":\(ms),\"level\":\"\(lvl.name)\",\"logger\":"
        JSONText.appendQuoted(label, to: &line)
        line += ",\"msg\":"
        JSONText.appendQuoted(message(), to: &line)
        var fields = metadata
        for (k, v) in extra() { fields[k] = v }
        for (k, v) in fields.sorted(by: { $0.key < $1.key }) {
            line += ","
            JSONText.appendQuoted(k, to: &line)
            line += ":"
            JSONText.appendQuoted(v, to: &line)
        }
        line += "}\n"
        var bytes = Array(line.utf8)
        _ = bytes.withUnsafeMutableBytes { Glibc.write(2, $0.baseAddress, $0.count) }
    }
}

/// Minimal JSON string escaping (RFC 8259 §7) shared by the logger and encoders.
public enum JSONText {
    public static func appendQuoted(_ s: String, to out: inout String) {
        out.append("\"")
        for scalar in s.unicodeScalars {
            switch scalar {
            case "\"": out.append("\\\"")
            case "\\": out.append("\\\\")
            case "\n": out.append("\\n")
            case "\r": out.append("\\r")
            case "\t": out.append("\\t")
            default:
                if scalar.value < 0x20 {
                    let hex = String(scalar.value, radix: 16)
                    out.append("\\u" + String(repeating: "0", count: 4 - hex.count) + hex)
                } else {
                    out.unicodeScalars.append(scalar)
                }
            }
        }
        out.append("\"")
    }

    public static func quoted(_ s: String) -> String {
        var out = ""
        appendQuoted(s, to: &out)
        return out
    }
}

/// Writes a line to standard error (for CLI messages, not logs).
public func printError(_ s: String) {
    var line = Array((s + "\n").utf8)
    _ = line.withUnsafeMutableBytes { Glibc.write(2, $0.baseAddress, $0.count) }
}

/// Writes a line to standard output unbuffered (scripts wait for these lines).
public func printLine(_ s: String) {
    var line = Array((s + "\n").utf8)
    _ = line.withUnsafeMutableBytes { Glibc.write(1, $0.baseAddress, $0.count) }
}
