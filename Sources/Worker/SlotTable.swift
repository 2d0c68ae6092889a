/// A worker node's generation slots as a pure state machine: what is claimed, running and free,
/// and whether the node drains; decisions go out as values (how many to claim, whether to claim
/// again). Shared by every queue the node pulls from (the fleet's and, on a
/// serve node, the in-memory fallback), so together they never take more jobs than slots.
public struct SlotTable: Sendable, Equatable {
    public let slots: Int
    /// Claimed (asked for or received) and not started yet: their slots are spoken for.
    public private(set) var reserved = 0
    public private(set) var running = 0
    public private(set) var draining = false

    public init(slots: Int) {
        self.slots = max(1, slots)
    }

    public var free: Int { max(0, slots - running - reserved) }
    /// Generations started or about to start.
    public var inFlight: Int { running + reserved }

    /// Reserves up to `max` free slots for a claim; 0 while draining or full.
    public mutating func reserve(upTo max: Int) -> Int {
        guard !draining else { return 0 }
        let n = Swift.min(max, free)
        reserved += n
        return n
    }

    /// A claim brought `received` of the `asked` slots it reserved: the rest are free again.
    public mutating func claimed(_ received: Int, of asked: Int) {
        reserved -= Swift.max(0, asked - Swift.min(received, asked))
    }

    /// A claimed job starts (its reserved slot becomes a running one).
    public mutating func started() {
        reserved -= 1
        running += 1
    }

    /// A claimed job is dropped unstarted (unreadable, expired): its slot is free again.
    public mutating func dropped() { reserved -= 1 }

    /// A generation ended: a slot is free; true if jobs should be claimed for it now.
    public mutating func finished() -> Bool {
        running -= 1
        return !draining
    }

    /// Takes no more jobs; the running ones go on.
    public mutating func drain() { draining = true }
}
