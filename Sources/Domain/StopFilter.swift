/// Applies stop sequences to streamed text. Text that could still be the start of a stop sequence
/// is held back until the next piece shows it is not; a stop sequence itself is never emitted.
public struct StopFilter: Sendable {
    public let stops: [String]
    private var pending = ""

    public init(stops: [String]) { self.stops = stops }

    /// Feeds a piece; returns the text that is safe to emit and whether a stop sequence was hit.
    public mutating func feed(_ piece: String) -> (emit: String, stopped: Bool) {
        if stops.isEmpty { return (piece, false) }
        pending += piece
        var earliest: String.Index?
        for s in stops {
            if let r = pending.firstRange(of: s), earliest.map({ r.lowerBound < $0 }) ?? true { earliest = r.lowerBound }
        }
        if let cut = earliest {
            let out = String(pending[..<cut])
            pending = ""
            return (out, true)
        }
        // Hold back the longest suffix that is a prefix of some stop sequence.
        var hold = 0
        for s in stops {
            let maxLen = min(s.count - 1, pending.count)
            if maxLen <= 0 { continue }
            for len in stride(from: maxLen, to: 0, by: -1) where len > hold {
                if pending.hasSuffix(s.prefix(len)) { hold = len; break }
            }
        }
        let emitEnd = pending.index(pending.endIndex, offsetBy: -hold)
        let out = String(pending[..<emitEnd])
        pending = String(pending[emitEnd...])
        return (out, false)
    }

    /// The held-back text, at the end of a generation that was not stopped.
    public mutating func flush() -> String {
        let out = pending
        pending = ""
        return out
    }
}

extension String {
    func firstRange(of needle: String) -> Range<String.Index>? {
        guard !needle.isEmpty, needle.count <= count else { return nil }
        var i = startIndex
        while i < endIndex {
            if self[i...].hasPrefix(needle) { return i..<index(i, offsetBy: needle.count) }
            i = index(after: i)
        }
        return nil
    }
}
