/// Builds JSON text into a byte array without intermediate strings. Callers write the structure;
/// the writer handles commas and escaping.
public struct JSONWriter {
    public var bytes: [UInt8]
    private var needsComma = false

    public init(capacity: Int = 256) {
        bytes = []
        bytes.reserveCapacity(capacity)
    }

    /// Empties the writer, keeping its buffer for the next document.
    public mutating func reset() {
        bytes.removeAll(keepingCapacity: true)
        needsComma = false
    }

    public mutating func beginObject() { separator(); bytes.append(UInt8(ascii: "{")); needsComma = false }
    public mutating func endObject() { bytes.append(UInt8(ascii: "}")); needsComma = true }
    public mutating func beginArray() { separator(); bytes.append(UInt8(ascii: "[")); needsComma = false }
    public mutating func endArray() { bytes.append(UInt8(ascii: "]")); needsComma = true }

    public mutating func key(_ k: StaticString) {
        separator()
        bytes.append(UInt8(ascii: "\""))
        bytes.append(contentsOf: UnsafeBufferPointer(start: k.utf8Start, count: k.utf8CodeUnitCount))
        bytes.append(UInt8(ascii: "\""))
        bytes.append(UInt8(ascii: ":"))
        needsComma = false
    }

    public mutating func key(_ k: String) {
        separator()
        JSONWriter.appendEscaped(k, to: &bytes)
        bytes.append(UInt8(ascii: ":"))
        needsComma = false
    }

    public mutating func string(_ s: String) { separator(); JSONWriter.appendEscaped(s, to: &bytes); needsComma = true }
    public mutating func int(_ v: Int) { separator(); JSONWriter.appendInt(v, to: &bytes); needsComma = true }
    public mutating func bool(_ v: Bool) { separator(); bytes.append(contentsOf: (v ? "true" : "false").utf8); needsComma = true }
    public mutating func null() { separator(); bytes.append(contentsOf: "null".utf8); needsComma = true }

    public mutating func double(_ v: Double) {
        separator()
        if v.isFinite {
            // Whole numbers up to 2^53 (all exact in a double) as integers: a server reading an
            // integer field (a seed, a count) refuses `1000000000000001.0`.
            if v == v.rounded() && abs(v) <= 9_007_199_254_740_992 && !(v == 0 && v.sign == .minus) {
                JSONWriter.appendInt(Int(v), to: &bytes)
            } else {
                bytes.append(contentsOf: "\(v)".utf8)
            }
        } else {
            bytes.append(contentsOf: "null".utf8)
        }
        needsComma = true
    }

    /// Writes an already-encoded JSON value.
    public mutating func raw(_ json: [UInt8]) { separator(); bytes.append(contentsOf: json); needsComma = true }

    /// Writes the members of an already-encoded compact object (`{"a":1,"b":2}` → `"a":1,"b":2`)
    /// into the object being written; nothing for `{}` or text that is not `{…}`.
    public mutating func rawMembers(of object: String) {
        let u = object.utf8
        guard u.count > 2, u.first == UInt8(ascii: "{"), u.last == UInt8(ascii: "}") else { return }
        separator()
        bytes.append(contentsOf: u.dropFirst().dropLast())
        needsComma = true
    }

    public mutating func value(_ v: JSONValue) {
        switch v {
        case .null: null()
        case .bool(let b): bool(b)
        case .number(let d): double(d)
        case .string(let s): string(s)
        case .array(let a):
            beginArray()
            for x in a { value(x) }
            endArray()
        case .object(let o):
            beginObject()
            for (k, x) in o.pairs { key(k); value(x) }
            endObject()
        }
    }

    private mutating func separator() {
        if needsComma { bytes.append(UInt8(ascii: ",")) }
    }

    public var string: String { String(decoding: bytes, as: UTF8.self) }

    private static let hex: [UInt8] = Array("0123456789abcdef".utf8)

    /// RFC 8259 §7 escaping. Non-ASCII passes through as UTF-8.
    public static func appendEscaped(_ s: String, to out: inout [UInt8]) {
        out.append(UInt8(ascii: "\""))
        var s = s
        s.withUTF8 { u in
            var runStart = 0
            for (i, c) in u.enumerated() where c < 0x20 || c == 0x22 || c == 0x5C {
                if runStart < i { out.append(contentsOf: UnsafeBufferPointer(rebasing: u[runStart..<i])) }
                switch c {
                case 0x22: out.append(0x5C); out.append(0x22)
                case 0x5C: out.append(0x5C); out.append(0x5C)
                case 0x0A: out.append(0x5C); out.append(UInt8(ascii: "n"))
                case 0x0D: out.append(0x5C); out.append(UInt8(ascii: "r"))
                case 0x09: out.append(0x5C); out.append(UInt8(ascii: "t"))
                default:
                    out.append(contentsOf: [0x5C, UInt8(ascii: "u"), 48, 48, hex[Int(c >> 4)], hex[Int(c & 15)]])
                }
                runStart = i + 1
            }
            if runStart < u.count { out.append(contentsOf: UnsafeBufferPointer(rebasing: u[runStart...])) }
        }
        out.append(UInt8(ascii: "\""))
    }

    public static func appendInt(_ v: Int, to out: inout [UInt8]) {
        if v == 0 { out.append(48); return }
        var x = v.magnitude
        if v < 0 { out.append(UInt8(ascii: "-")) }
        var tmp: (UInt8, UInt8, UInt8, UInt8, UInt8, UInt8, UInt8, UInt8, UInt8, UInt8,
                  UInt8, UInt8, UInt8, UInt8, UInt8, UInt8, UInt8, UInt8, UInt8, UInt8) =
            (0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0)
        var n = 0
        withUnsafeMutableBytes(of: &tmp) { t in
            while x > 0 { t[n] = UInt8(48 + x % 10); x /= 10; n += 1 }
            while n > 0 { n -= 1; out.append(t[n]) }
        }
    }
}
