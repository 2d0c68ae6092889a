/// A strict JSON parser over UTF-8 bytes: no comments, no trailing commas, no NaN, bounded depth,
/// nothing after the value but whitespace. Invalid UTF-8 inside strings is an error.
public struct JSONParser {
    public static let maxDepth = 64

    /// `rejectDuplicateKeys`: a key repeated in one object is an error (configuration files, where
    /// a silent last-wins hides a mistake); otherwise the last value wins (requests, as OpenAI does).
    /// `depthLimit`: the deepest nesting accepted (a message that wraps a client's body one or two
    /// levels deeper passes a larger one than the body was checked with).
    public static func parse(_ bytes: [UInt8], rejectDuplicateKeys: Bool = false, depthLimit: Int = maxDepth) throws(JSONError) -> JSONValue {
        try bytes.withUnsafeBufferPointer { (p: UnsafeBufferPointer<UInt8>) throws(JSONError) -> JSONValue in
            var parser = JSONParser(p)
            parser.rejectDuplicateKeys = rejectDuplicateKeys
            parser.depthLimit = depthLimit
            parser.skipWhitespace()
            let v = try parser.value(depth: 0)
            parser.skipWhitespace()
            if parser.i != p.count { throw parser.error("unexpected data after the JSON value") }
            return v
        }
    }

    public static func parse(_ s: String) throws(JSONError) -> JSONValue { try parse(Array(s.utf8)) }

    private let p: UnsafeBufferPointer<UInt8>
    private var i = 0
    private var rejectDuplicateKeys = false
    private var depthLimit = JSONParser.maxDepth

    private init(_ p: UnsafeBufferPointer<UInt8>) { self.p = p }

    private func error(_ m: String) -> JSONError { JSONError(message: m, offset: i) }

    private mutating func skipWhitespace() {
        while i < p.count, p[i] == 0x20 || p[i] == 0x0A || p[i] == 0x0D || p[i] == 0x09 { i += 1 }
    }

    private mutating func value(depth: Int) throws(JSONError) -> JSONValue {
        guard i < p.count else { throw error("unexpected end of input") }
        switch p[i] {
        case UInt8(ascii: "{"): return try object(depth: depth + 1)
        case UInt8(ascii: "["): return try array(depth: depth + 1)
        case UInt8(ascii: "\""): return .string(try string())
        case UInt8(ascii: "t"): try literal("true"); return .bool(true)
        case UInt8(ascii: "f"): try literal("false"); return .bool(false)
        case UInt8(ascii: "n"): try literal("null"); return .null
        case UInt8(ascii: "-"), UInt8(ascii: "0")...UInt8(ascii: "9"): return .number(try number())
        default: throw error("unexpected character")
        }
    }

    private mutating func literal(_ word: StaticString) throws(JSONError) {
        let n = word.utf8CodeUnitCount
        guard i + n <= p.count else { throw error("invalid literal") }
        let w = UnsafeBufferPointer(start: word.utf8Start, count: n)
        for k in 0..<n where p[i + k] != w[k] { throw error("invalid literal") }
        i += n
    }

    private mutating func object(depth: Int) throws(JSONError) -> JSONValue {
        if depth > depthLimit { throw error("nesting deeper than \(depthLimit)") }
        i += 1
        var o = JSONObject()
        // A later duplicate key replaces the earlier value. Small objects find duplicates by a
        // scan; past a few keys an index does, so a 1 MB object of 100k keys costs O(n), not O(n²).
        var index: [String: Int]?
        skipWhitespace()
        if i < p.count, p[i] == UInt8(ascii: "}") { i += 1; return .object(o) }
        while true {
            skipWhitespace()
            guard i < p.count, p[i] == UInt8(ascii: "\"") else { throw error("expected a string key") }
            let k = try string()
            skipWhitespace()
            guard i < p.count, p[i] == UInt8(ascii: ":") else { throw error("expected ':'") }
            i += 1
            skipWhitespace()
            let v = try value(depth: depth)
            if index == nil && o.count >= 8 {
                var built: [String: Int] = [:]
                for (n, pair) in o.pairs.enumerated() { built[pair.key] = n }
                index = built
            }
            if let at = index?[k] ?? (index == nil ? o.pairs.firstIndex(where: { $0.key == k }) : nil) {
                if rejectDuplicateKeys { throw error("the key \"\(k.prefix(64))\" appears twice in one object") }
                o.replaceValue(at: at, with: v)
            } else {
                index?[k] = o.count
                o.appendNew(k, v)
            }
            skipWhitespace()
            guard i < p.count else { throw error("unexpected end of input") }
            if p[i] == UInt8(ascii: ",") { i += 1; continue }
            if p[i] == UInt8(ascii: "}") { i += 1; return .object(o) }
            throw error("expected ',' or '}'")
        }
    }

    private mutating func array(depth: Int) throws(JSONError) -> JSONValue {
        if depth > depthLimit { throw error("nesting deeper than \(depthLimit)") }
        i += 1
        var a: [JSONValue] = []
        skipWhitespace()
        if i < p.count, p[i] == UInt8(ascii: "]") { i += 1; return .array(a) }
        while true {
            skipWhitespace()
            a.append(try value(depth: depth))
            skipWhitespace()
            guard i < p.count else { throw error("unexpected end of input") }
            if p[i] == UInt8(ascii: ",") { i += 1; continue }
            if p[i] == UInt8(ascii: "]") { i += 1; return .array(a) }
            throw error("expected ',' or ']'")
        }
    }

    private mutating func string() throws(JSONError) -> String {
        i += 1
        let start = i
        // Fast path: no escapes.
        while i < p.count {
            let c = p[i]
            if c == UInt8(ascii: "\"") {
                let raw = UnsafeBufferPointer(rebasing: p[start..<i])
                guard let s = String(validating: raw, as: UTF8.self) else { throw error("invalid UTF-8 in string") }
                i += 1
                return s
            }
            if c == UInt8(ascii: "\\") { break }
            if c < 0x20 { throw error("control character in string") }
            i += 1
        }
        var out: [UInt8] = Array(p[start..<i])
        while i < p.count {
            let c = p[i]
            if c == UInt8(ascii: "\"") {
                i += 1
                guard let s = String(validating: out, as: UTF8.self) else { throw error("invalid UTF-8 in string") }
                return s
            }
            if c < 0x20 { throw error("control character in string") }
            if c != UInt8(ascii: "\\") { out.append(c); i += 1; continue }
            i += 1
            guard i < p.count else { break }
            let e = p[i]
            i += 1
            switch e {
            case UInt8(ascii: "\""): out.append(0x22)
            case UInt8(ascii: "\\"): out.append(0x5C)
            case UInt8(ascii: "/"): out.append(0x2F)
            case UInt8(ascii: "b"): out.append(0x08)
            case UInt8(ascii: "f"): out.append(0x0C)
            case UInt8(ascii: "n"): out.append(0x0A)
            case UInt8(ascii: "r"): out.append(0x0D)
            case UInt8(ascii: "t"): out.append(0x09)
            case UInt8(ascii: "u"):
                var scalar = try hex4()
                if (0xD800...0xDBFF).contains(scalar) {
                    // A surrogate pair; a lone surrogate becomes U+FFFD.
                    if i + 1 < p.count, p[i] == UInt8(ascii: "\\"), p[i + 1] == UInt8(ascii: "u") {
                        let save = i
                        i += 2
                        let low = try hex4()
                        if (0xDC00...0xDFFF).contains(low) {
                            scalar = 0x10000 + ((scalar - 0xD800) << 10) + (low - 0xDC00)
                        } else {
                            i = save
                            scalar = 0xFFFD
                        }
                    } else {
                        scalar = 0xFFFD
                    }
                } else if (0xDC00...0xDFFF).contains(scalar) {
                    scalar = 0xFFFD
                }
                out.append(contentsOf: String(Character(Unicode.Scalar(scalar)!)).utf8)
            default:
                throw error("invalid escape")
            }
        }
        throw error("unterminated string")
    }

    private mutating func hex4() throws(JSONError) -> UInt32 {
        guard i + 4 <= p.count else { throw error("short \\u escape") }
        var v: UInt32 = 0
        for _ in 0..<4 {
            let c = p[i]
            let d: UInt32
            switch c {
            case 48...57: d = UInt32(c - 48)
            case 65...70: d = UInt32(c - 55)
            case 97...102: d = UInt32(c - 87)
            default: throw error("invalid \\u escape")
            }
            v = v << 4 | d
            i += 1
        }
        return v
    }

    private mutating func number() throws(JSONError) -> Double {
        let start = i
        if p[i] == UInt8(ascii: "-") { i += 1 }
        guard i < p.count else { throw error("invalid number") }
        if p[i] == UInt8(ascii: "0") {
            i += 1
        } else if (49...57).contains(p[i]) {
            while i < p.count, (48...57).contains(p[i]) { i += 1 }
        } else {
            throw error("invalid number")
        }
        if i < p.count, p[i] == UInt8(ascii: ".") {
            i += 1
            guard i < p.count, (48...57).contains(p[i]) else { throw error("invalid number") }
            while i < p.count, (48...57).contains(p[i]) { i += 1 }
        }
        if i < p.count, p[i] == UInt8(ascii: "e") || p[i] == UInt8(ascii: "E") {
            i += 1
            if i < p.count, p[i] == UInt8(ascii: "+") || p[i] == UInt8(ascii: "-") { i += 1 }
            guard i < p.count, (48...57).contains(p[i]) else { throw error("invalid number") }
            while i < p.count, (48...57).contains(p[i]) { i += 1 }
        }
        let text = String(decoding: UnsafeBufferPointer(rebasing: p[start..<i]), as: UTF8.self)
        guard let d = Double(text), d.isFinite else { throw error("number out of range") }
        return d
    }
}
