/// Incremental UTF-8 validation (RFC 3629 §4) that can be fed a message in pieces and fails on the
/// first byte that can no longer start or continue a valid sequence, so a bad text frame is refused
/// before the rest of it arrives.
public struct UTF8Validator: Sendable {
    /// Continuation bytes still expected in the current sequence.
    private var needed: UInt8 = 0
    /// Allowed range for the next continuation byte (narrowed after E0, ED, F0, F4 lead bytes).
    private var low: UInt8 = 0x80
    private var high: UInt8 = 0xBF

    public init() {}

    /// True when every byte so far was valid and no sequence is left open.
    public var isComplete: Bool { needed == 0 }

    public mutating func reset() { needed = 0; low = 0x80; high = 0xBF }

    /// Feeds bytes; false at the first invalid byte (the validator is then unusable until reset).
    public mutating func feed(_ bytes: UnsafeRawBufferPointer) -> Bool {
        var i = 0
        let n = bytes.count
        while i < n {
            let b = bytes[i]
            if needed == 0 {
                // Fast path for ASCII runs, 8 bytes at a time.
                if b < 0x80 {
                    i += 1
                    while i + 8 <= n && bytes.loadUnaligned(fromByteOffset: i, as: UInt64.self) & 0x8080_8080_8080_8080 == 0 {
                        i += 8
                    }
                    continue
                }
                switch b {
                case 0xC2...0xDF: needed = 1; low = 0x80; high = 0xBF
                case 0xE0: needed = 2; low = 0xA0; high = 0xBF
                case 0xE1...0xEC, 0xEE...0xEF: needed = 2; low = 0x80; high = 0xBF
                case 0xED: needed = 2; low = 0x80; high = 0x9F  // no UTF-16 surrogates
                case 0xF0: needed = 3; low = 0x90; high = 0xBF
                case 0xF1...0xF3: needed = 3; low = 0x80; high = 0xBF
                case 0xF4: needed = 3; low = 0x80; high = 0x8F  // nothing above U+10FFFF
                default: return false
                }
            } else {
                guard b >= low && b <= high else { return false }
                needed -= 1
                low = 0x80
                high = 0xBF
            }
            i += 1
        }
        return true
    }

    public static func isValid(_ bytes: UnsafeRawBufferPointer) -> Bool {
        var v = UTF8Validator()
        return v.feed(bytes) && v.isComplete
    }

    public static func isValid(_ bytes: [UInt8]) -> Bool {
        bytes.withUnsafeBytes { isValid($0) }
    }
}
