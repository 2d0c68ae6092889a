import JSON

/// An opaque pagination cursor: the sort key and id of the last row of a page.
public struct SearchCursor: Sendable, Equatable {
    public let kind: String  // "t": created_at (listing), "f": score (fuzzy search, an integer)
    public let key: String
    public let id: String

    public init(kind: String, key: String, id: String) {
        self.kind = kind
        self.key = key
        self.id = id
    }

    public var encoded: String { Base64URL.encode(Array("\(kind)|\(key)|\(id)".utf8)) }

    /// A cursor this server did not issue for this kind of page.
    public struct NotIssued: Error {}

    /// Where a page of `kind` ("t": the listing, "f": a search) continues: nil without a cursor.
    public static func continuing(_ cursor: String?, kind: String) throws(NotIssued) -> SearchCursor? {
        guard let cursor else { return nil }
        guard let c = decode(cursor), c.kind == kind else { throw NotIssued() }
        return c
    }

    public static func decode(_ s: String) -> SearchCursor? {
        guard s.utf8.count <= 200, let bytes = Base64URL.decode(s) else { return nil }
        let parts = String(decoding: bytes, as: UTF8.self).split(separator: "|", omittingEmptySubsequences: false)
        guard parts.count == 3, parts[0] == "t" || parts[0] == "f", UUIDText.isValid(String(parts[2])) else { return nil }
        let key = String(parts[1])
        if parts[0] == "f" { guard let score = Int(key), score >= 0, score < 1 << 30 else { return nil } } else {
            // 2026-11-30T22:16:19.123456Z
            guard key.utf8.count == 27, key.utf8.allSatisfy({ ($0 >= 48 && $0 <= 58) || $0 == 45 || $0 == 46 || $0 == 84 || $0 == 90 }),
                  Timestamps.micros(key) != nil else { return nil }
        }
        return SearchCursor(kind: String(parts[0]), key: key, id: String(parts[2]))
    }
}

/// base64url without padding (RFC 4648 §5).
public enum Base64URL {
    public static func encode(_ b: [UInt8]) -> String {
        let a = Array("ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789-_".utf8)
        var out: [UInt8] = []
        var i = 0
        while i + 3 <= b.count {
            let v = UInt32(b[i]) << 16 | UInt32(b[i + 1]) << 8 | UInt32(b[i + 2])
            out += [a[Int(v >> 18 & 63)], a[Int(v >> 12 & 63)], a[Int(v >> 6 & 63)], a[Int(v & 63)]]
            i += 3
        }
        if b.count - i == 1 {
            let v = UInt32(b[i]) << 16
            out += [a[Int(v >> 18 & 63)], a[Int(v >> 12 & 63)]]
        } else if b.count - i == 2 {
            let v = UInt32(b[i]) << 16 | UInt32(b[i + 1]) << 8
            out += [a[Int(v >> 18 & 63)], a[Int(v >> 12 & 63)], a[Int(v >> 6 & 63)]]
        }
        return String(decoding: out, as: UTF8.self)
    }

    public static func decode(_ s: String) -> [UInt8]? {
        var out: [UInt8] = []
        var acc: UInt32 = 0, bits = 0
        for c in s.utf8 {
            let v: UInt32
            switch c {
            case 65...90: v = UInt32(c - 65)
            case 97...122: v = UInt32(c - 71)
            case 48...57: v = UInt32(c + 4)
            case UInt8(ascii: "-"): v = 62
            case UInt8(ascii: "_"): v = 63
            default: return nil
            }
            acc = acc << 6 | v
            bits += 6
            if bits >= 8 {
                bits -= 8
                out.append(UInt8((acc >> UInt32(bits)) & 0xFF))
            }
        }
        return out
    }
}

/// UUIDs as text: the preset ids and idempotency keys.
public enum UUIDText {
    /// A syntactically valid UUID (anything else cannot name a preset: not found, never a SQL error).
    public static func isValid(_ s: String) -> Bool {
        let u = Array(s.utf8)
        guard u.count == 36 else { return false }
        for (i, c) in u.enumerated() {
            if i == 8 || i == 13 || i == 18 || i == 23 { if c != UInt8(ascii: "-") { return false } } else if !isHex(c) { return false }
        }
        return true
    }

    static func isHex(_ c: UInt8) -> Bool { (48...57).contains(c) || (65...70).contains(c) || (97...102).contains(c) }

    /// A random (version 4) UUID, lower-case, from 16 random bytes.
    public static func make(_ random: [UInt8]) -> String {
        precondition(random.count == 16)
        var b = random
        b[6] = b[6] & 0x0F | 0x40
        b[8] = b[8] & 0x3F | 0x80
        let hex = Array("0123456789abcdef".utf8)
        var out: [UInt8] = []
        for (i, x) in b.enumerated() {
            if i == 4 || i == 6 || i == 8 || i == 10 { out.append(UInt8(ascii: "-")) }
            out.append(hex[Int(x >> 4)]); out.append(hex[Int(x & 15)])
        }
        return String(decoding: out, as: UTF8.self)
    }
}
