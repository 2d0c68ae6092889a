internal import CCrypto
import FleetCore

/// The fleet's shared secret for stream links: `PLAYGROUND_FLEET_SECRET` when set (every node of
/// a production fleet gets the same one from its deployment), else one made once and kept in Redis
/// for this fleet name (a local fleet needs no set-up; two fleets on one Redis get different
/// secrets, so their links never cross).
public enum FleetSecret {
    public enum Failure: Error, CustomStringConvertible {
        case tooShort
        case redis(String)
        public var description: String {
            switch self {
            case .tooShort: return "PLAYGROUND_FLEET_SECRET must hold at least 16 characters"
            case .redis(let e): return "the fleet secret could not be read from Redis: \(e)"
            }
        }
    }

    /// The secret from the environment value, or (nil) from Redis: made there if missing.
    public static func resolve(environment value: String?, redis endpoint: RedisEndpoint, keys: FleetKeys) throws(Failure) -> [UInt8] {
        if let value {
            guard value.utf8.count >= 16 else { throw .tooShort }
            return Array(value.utf8)
        }
        let key = "{fleet:\(keys.fleet)}:link-secret"
        do {
            let redis = try BlockingRedis(endpoint: endpoint, timeoutSeconds: 1)
            defer { redis.close() }
            // Read first (a Redis refusing writes still serves it); the first node makes it with
            // SET NX, everyone after reads the same one.
            if case .bulk(let b) = try redis.call(["GET", key]), b.count >= 16 { return b }
            _ = try redis.call(["SET", key, hex(randomBytes(32)), "NX"])
            guard case .bulk(let b) = try redis.call(["GET", key]), b.count >= 16 else { throw Failure.redis("no secret stored") }
            return b
        } catch let f as Failure {
            throw f
        } catch {
            throw .redis("\(error)")
        }
    }

    /// HMAC-SHA256 and random nonces for links under `secret`.
    /// Links under the secret `secret()` gives (nil: not known yet — no link is opened or accepted).
    public static func auth(secret: @escaping @Sendable () -> [UInt8]?) -> LinkAuth {
        LinkAuth(mac: { data in secret().map { hmac($0, data) } ?? [] }, random: { randomBytes($0) }, isReady: { secret() != nil })
    }

    /// HMAC-SHA256; empty if libcrypto failed (it then matches no MAC).
    static func hmac(_ key: [UInt8], _ data: [UInt8]) -> [UInt8] {
        precondition(!key.isEmpty, "an empty HMAC key")
        var out = [UInt8](repeating: 0, count: 32)
        var len: UInt32 = 32
        let ok = key.withUnsafeBufferPointer { k in
            data.withUnsafeBufferPointer { d in
                out.withUnsafeMutableBufferPointer { o in
                    HMAC(EVP_sha256(), k.baseAddress, Int32(k.count), d.baseAddress, d.count, o.baseAddress, &len) != nil
                }
            }
        }
        return ok && len == 32 ? out : []
    }

    static func randomBytes(_ n: Int) -> [UInt8] {
        var b = [UInt8](repeating: 0, count: n)
        let ok = b.withUnsafeMutableBufferPointer { RAND_bytes($0.baseAddress, Int32(n)) }
        precondition(ok == 1, "RAND_bytes failed")
        return b
    }

    static func hex(_ b: [UInt8]) -> String {
        let digits = Array("0123456789abcdef".utf8)
        var s: [UInt8] = []
        s.reserveCapacity(b.count * 2)
        for x in b { s.append(digits[Int(x >> 4)]); s.append(digits[Int(x & 15)]) }
        return String(decoding: s, as: UTF8.self)
    }
}
