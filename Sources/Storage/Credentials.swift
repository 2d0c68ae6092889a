internal import CCrypto
import Domain

/// API keys and session tokens: random secrets shown once, stored only as SHA-256.
public enum Credentials {
    public static let keyPrefix = "pgk_"

    public static func randomBytes(_ n: Int) -> [UInt8] {
        var b = [UInt8](repeating: 0, count: n)
        let ok = b.withUnsafeMutableBufferPointer { RAND_bytes($0.baseAddress, Int32(n)) }
        precondition(ok == 1, "RAND_bytes failed")
        return b
    }

    /// A new API key: `pgk_` + 32 random bytes in base64url.
    public static func newKey() -> String { keyPrefix + base64url(randomBytes(32)) }

    /// A new session token (the cookie value).
    public static func newSessionToken() -> String { base64url(randomBytes(32)) }

    /// A random UUID (preset ids and idempotency keys made before the database sees them).
    public static func newUUID() -> String { UUIDText.make(randomBytes(16)) }

    public static func sha256(_ s: String) -> [UInt8] {
        var d = [UInt8](repeating: 0, count: 32)
        let u = Array(s.utf8)
        u.withUnsafeBufferPointer { p in d.withUnsafeMutableBufferPointer { _ = SHA256(p.baseAddress, p.count, $0.baseAddress) } }
        return d
    }

    public static func hex(_ b: [UInt8]) -> String {
        let digits = Array("0123456789abcdef".utf8)
        var out: [UInt8] = []
        out.reserveCapacity(b.count * 2)
        for x in b { out.append(digits[Int(x >> 4)]); out.append(digits[Int(x & 15)]) }
        return String(decoding: out, as: UTF8.self)
    }

    /// `\x…` bytea literal for a bound parameter.
    public static func bytea(_ b: [UInt8]) -> String { "\\x" + hex(b) }

    public static func base64url(_ b: [UInt8]) -> String { Base64URL.encode(b) }

    /// A plausible credential: bounded length, printable ASCII only (never reaches SQL unhashed).
    public static func looksValid(_ s: String) -> Bool {
        (16...256).contains(s.utf8.count) && s.utf8.allSatisfy { $0 > 32 && $0 < 127 }
    }
}
