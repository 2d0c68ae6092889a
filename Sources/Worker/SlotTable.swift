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
    /// Held by a claim that waits for jobs to arrive (the fleet's blocking read): a claim that
    /// answers at once (this process's own queue) may take them over.
    public private(set) var waiting = 0

    public init(slots: Int) {
        self.slots = max(1, slots)
    }

    public var free: Int { max(0, slots - running - reserved - waiting) }
    /// Slots a claim that answers at once can get: free ones and those a waiting claim holds.
    public var available: Int { free + waiting }
    /// Generations started or about to start.
    public var inFlight: Int { running + reserved }
    /// Nothing runs, nothing is claimed, no claim is out (a waiting read may still bring jobs:
    /// a draining node waits for it).
    public var isIdle: Bool { running + reserved + waiting == 0 }

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

    /// Holds up to `max` free slots for a claim that waits for jobs; 0 while draining or full.
    public mutating func reserveWaiting(upTo max: Int) -> Int {
        guard !draining else { return 0 }
        let n = Swift.min(max, free)
        waiting += n
        return n
    }

    /// Reserves up to `max` slots for a claim that answers at once, taking over slots a waiting
    /// claim holds if no free one is left.
    public mutating func reservePreempting(upTo max: Int) -> Int {
        guard !draining else { return 0 }
        let fromFree = Swift.min(max, free)
        let fromWaiting = Swift.min(max - fromFree, waiting)
        waiting -= fromWaiting
        reserved += fromFree + fromWaiting
        return fromFree + fromWaiting
    }

    /// The waiting claim brought `received` jobs; they all start. If this process's own jobs took
    /// its slots meanwhile, the node runs more than `slots` for a moment (by at most one claim's
    /// batch) rather than hold a job it claimed: a claimed job left unstarted would wait for the
    /// reclaim, seconds later. Returns how many ran over the slots.
    @discardableResult
    public mutating func claimedWaiting(_ received: Int) -> Int {
        let over = Swift.max(0, received - waiting)
        reserved += received
        waiting = 0
        return over
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
