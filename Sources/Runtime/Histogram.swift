import Synchronization

/// A cumulative histogram with fixed bucket bounds (in the unit its name says: ms, seconds), in
/// Prometheus text. One short lock per record: it is touched once per completion, not per token.
public final class Histogram: Sendable {
    public let bounds: [Double]
    private struct Counts { var buckets: [Int]; var sum = 0.0; var total = 0 }
    private let counts: Mutex<Counts>

    public init(bounds: [Double]) {
        self.bounds = bounds
        counts = Mutex(Counts(buckets: [Int](repeating: 0, count: bounds.count)))
    }

    public func record(ms: Double) { record(ms) }

    public func record(_ value: Double) {
        let i = bounds.firstIndex { value <= $0 }
        counts.withLock { c in
            if let i { c.buckets[i] += 1 }
            c.sum += value
            c.total += 1
        }
    }

    public func render(_ name: String, help: String, into out: inout String) {
        let c = counts.withLock { $0 }
        out += "# HELP \(name) \(help)\n# TYPE \(name) histogram\n"
        var cumulative = 0
        for (i, b) in bounds.enumerated() {
            cumulative += c.buckets[i]
            out += "\(name)_bucket{le=\"\(b)\"} \(cumulative)\n"
        }
        out += "\(name)_bucket{le=\"+Inf\"} \(c.total)\n"
        out += "\(name)_sum \(c.sum)\n"
        out += "\(name)_count \(c.total)\n"
    }
}
