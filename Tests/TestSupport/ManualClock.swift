import Runtime

/// A clock the test moves by hand: timers run when `advance` passes their time, in time order;
/// work handed to `execute` runs at the next `advance` (or `runQueued`). One thread only (the
/// test's). Lets decisions that depend on time (hedging, deadlines) be tested without sleeping.
public final class ManualClock: LoopClock, @unchecked Sendable {
    public private(set) var nowNanos: UInt64
    private final class Timer: Cancellable {
        let at: UInt64
        let seq: Int
        var body: (() -> Void)?
        init(at: UInt64, seq: Int, body: @escaping () -> Void) {
            self.at = at
            self.seq = seq
            self.body = body
        }
        func cancel() { body = nil }
    }
    private var timers: [Timer] = []
    private var queued: [@Sendable () -> Void] = []
    private var seq = 0

    public init(now: UInt64 = 1_000_000_000) { nowNanos = now }

    public var inEventLoop: Bool { true }
    public func execute(_ work: @escaping @Sendable () -> Void) { queued.append(work) }

    public func after(_ nanos: UInt64, _ body: @escaping () -> Void) -> Cancellable {
        seq += 1
        let t = Timer(at: nowNanos &+ nanos, seq: seq, body: body)
        timers.append(t)
        return t
    }

    /// Timers waiting (not cancelled, not run).
    public var pendingTimers: Int { timers.filter { $0.body != nil }.count }

    public func runQueued() {
        while !queued.isEmpty {
            let work = queued.removeFirst()
            work()
        }
    }

    /// Moves time forward by `nanos`, running what falls due on the way, each at its own time.
    public func advance(by nanos: UInt64) {
        let end = nowNanos &+ nanos
        runQueued()
        while let next = timers.filter({ $0.body != nil && $0.at <= end }).min(by: { ($0.at, $0.seq) < ($1.at, $1.seq) }) {
            nowNanos = max(nowNanos, next.at)
            let body = next.body
            next.body = nil
            timers.removeAll { $0 === next }
            body?()
            runQueued()
        }
        nowNanos = end
        timers.removeAll { $0.body == nil }
    }
}
