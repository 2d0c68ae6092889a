internal import CCrypto
import NetCore
import Runtime

/// A Lua script run by its SHA-1 (EVALSHA); when Redis does not know it (a restart, SCRIPT FLUSH)
/// the same call is retried once with its source (EVAL), which also caches it again.
public struct RedisScript: Sendable {
    public let name: String
    public let source: String
    public let sha1: String

    public init(name: String, source: String) {
        self.name = name
        self.source = source
        var digest = [UInt8](repeating: 0, count: 20)
        let bytes = Array(source.utf8)
        bytes.withUnsafeBufferPointer { p in digest.withUnsafeMutableBufferPointer { _ = SHA1(p.baseAddress, p.count, $0.baseAddress) } }
        sha1 = digest.map { String(format2: $0) }.joined()
    }

    /// Reads `<directory>/<name>.lua`.
    public static func load(_ name: String, from directory: String) throws(RedisScriptError) -> RedisScript {
        guard let bytes = Files.read("\(directory)/\(name).lua"), !bytes.isEmpty else {
            throw RedisScriptError(description: "cannot read \(directory)/\(name).lua")
        }
        return RedisScript(name: name, source: String(decoding: bytes, as: UTF8.self))
    }
}

public struct RedisScriptError: Error, CustomStringConvertible {
    public let description: String
}

extension String {
    init(format2 b: UInt8) {
        let hex = Array("0123456789abcdef")
        self = String([hex[Int(b >> 4)], hex[Int(b & 15)]])
    }
}

extension RedisClient {
    /// Runs `script` (loop thread). A NOSCRIPT answer is retried once with EVAL.
    public func run(_ script: RedisScript, keys: [String], args: [String], timeoutNanos: UInt64,
                    done: @escaping (Result<RedisReply, RedisError>) -> Void) {
        let tail = ["\(keys.count)"] + keys + args
        send(["EVALSHA", script.sha1] + tail, timeoutNanos: timeoutNanos) { [weak self] r in
            if case .success(.error(let e)) = r, e.hasPrefix("NOSCRIPT"), let self {
                self.send(["EVAL", script.source] + tail, timeoutNanos: timeoutNanos, done: done)
            } else {
                done(r)
            }
        }
    }
}
