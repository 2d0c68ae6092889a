import CLinux
import Runtime
import Synchronization
#if canImport(Glibc)
import Glibc
#endif

/// Something registered with a loop's epoll set. Called on the loop thread only.
public protocol Pollable: AnyObject {
    func handleEvents(_ events: UInt32)
}

/// A one-shot timer. Cancelling is O(1): the heap entry is skipped when it comes due.
public final class TimerHandle: Cancellable {
    let deadline: UInt64
    let sequence: UInt64
    var body: (() -> Void)?
    init(deadline: UInt64, sequence: UInt64, body: @escaping () -> Void) {
        self.deadline = deadline
        self.sequence = sequence
        self.body = body
    }
    public func cancel() { body = nil }
    public var isCancelled: Bool { body == nil }
}

/// One epoll event loop on its own thread.
///
/// Thread rules: `execute`, `wakeUp` and the `SerialExecutor` entry points may be called from any
/// thread; everything else (register, timers, connections) only on the loop thread.
public final class EventLoop: LoopClock, @unchecked Sendable {
    public let name: String
    let epfd: Int32
    private let wakeFD: Int32
    private var registrations: [Pollable?] = []
    private var generations: [UInt32] = []
    private var timers = TimerHeap()
    private var timerSequence: UInt64 = 0
    private let pending = Mutex<[@Sendable () -> Void]>([])
    private let wakePending = Atomic<Bool>(false)
    private let stopRequested = Atomic<Bool>(false)
    private var threadID: pthread_t?
    private let started = Atomic<Bool>(false)
    /// Shared read buffer: connections read into it and keep only what they have not consumed,
    /// so an idle connection costs no buffer memory.
    public let readBuffer: UnsafeMutableRawBufferPointer
    public static let readBufferSize = 64 * 1024
    /// Loop-local time, refreshed once per iteration: cheap to read on hot paths.
    public private(set) var now: UInt64 = monotonicNanos()
    /// A slot for a protocol layer's per-loop scratch object (loop thread only).
    public var scratchSlot: AnyObject?
    /// Open connections on this loop (loop thread only; read elsewhere as an estimate).
    public internal(set) var connectionCount = 0
    /// True inside `deferringWrites`: connections queue their writes and flush once at its end.
    public private(set) var writesDeferred = false
    var deferredFlushes: [Connection] = []
    /// Work queued by handlers to run after the current batch of events (e.g. flushes).
    private var afterTick: [() -> Void] = []

    public init(name: String) throws(SystemError) {
        self.name = name
        // Descriptors are stored only once all are made (a throwing init with every property set
        // runs deinit; one with some unset does not, so each failure closes what it opened).
        let ep = try Posix.epollCreate()
        let wake: Int32
        do { wake = try Posix.eventfdCreate() } catch { Posix.close(ep); throw error }
        do { try Posix.epollCtl(ep, EPOLL_CTL_ADD, wake, events: EPOLLIN.rawValue, data: UInt64(UInt32.max)) } catch {
            Posix.close(ep)
            Posix.close(wake)
            throw error
        }
        epfd = ep
        wakeFD = wake
        readBuffer = .allocate(byteCount: EventLoop.readBufferSize, alignment: 16)
    }

    deinit {
        Posix.close(epfd)
        Posix.close(wakeFD)
        readBuffer.deallocate()
    }

    public var inEventLoop: Bool {
        guard let t = threadID else { return false }
        return pthread_equal(t, pthread_self()) != 0
    }

    // MARK: registration (loop thread)

    public func register(fd: Int32, _ target: Pollable, events: UInt32) throws(SystemError) {
        let i = Int(fd)
        if i >= registrations.count {
            let n = max(i + 1, registrations.count * 2, 64)
            registrations.append(contentsOf: repeatElement(nil, count: n - registrations.count))
            generations.append(contentsOf: repeatElement(0, count: n - generations.count))
        }
        generations[i] &+= 1
        registrations[i] = target
        try Posix.epollCtl(epfd, EPOLL_CTL_ADD, fd, events: events, data: key(fd))
    }

    public func modify(fd: Int32, events: UInt32) throws(SystemError) {
        try Posix.epollCtl(epfd, EPOLL_CTL_MOD, fd, events: events, data: key(fd))
    }

    /// Removes fd from the set; events already fetched for it in this batch are dropped
    /// because its generation no longer matches.
    public func deregister(fd: Int32) {
        let i = Int(fd)
        guard i < registrations.count, registrations[i] != nil else { return }
        registrations[i] = nil
        generations[i] &+= 1
        try? Posix.epollCtl(epfd, EPOLL_CTL_DEL, fd, events: 0, data: 0)
    }

    @inline(__always) private func key(_ fd: Int32) -> UInt64 {
        UInt64(UInt32(bitPattern: fd)) | (UInt64(generations[Int(fd)]) << 32)
    }

    // MARK: timers (loop thread)

    public var nowNanos: UInt64 { monotonicNanos() }

    public func after(_ nanos: UInt64, _ body: @escaping () -> Void) -> Cancellable { schedule(afterNanos: nanos, body) }

    @discardableResult
    public func schedule(afterNanos delay: UInt64, _ body: @escaping () -> Void) -> TimerHandle {
        schedule(atNanos: monotonicNanos() &+ delay, body)
    }

    @discardableResult
    public func schedule(atNanos deadline: UInt64, _ body: @escaping () -> Void) -> TimerHandle {
        timerSequence &+= 1
        let t = TimerHandle(deadline: deadline, sequence: timerSequence, body: body)
        timers.push(t)
        return t
    }

    /// Runs `body`, holding the writes it makes and flushing each connection once at the end. For
    /// output produced in one synchronous step (a burst of frames made at the same instant): this
    /// coalesces, it never delays.
    public func deferringWrites<R>(_ body: () throws -> R) rethrows -> R {
        if writesDeferred { return try body() }
        writesDeferred = true
        defer {
            writesDeferred = false
            let conns = deferredFlushes
            deferredFlushes.removeAll(keepingCapacity: true)
            for c in conns { c.flushDeferred() }
        }
        return try body()
    }

    /// Runs `body` once the current batch of events has been handled (same iteration, no delay).
    public func runAfterTick(_ body: @escaping () -> Void) { afterTick.append(body) }

    // MARK: cross-thread

    /// Runs `task` on the loop thread, soon. Safe from any thread.
    public func execute(_ task: @escaping @Sendable () -> Void) {
        pending.withLock { $0.append(task) }
        if !wakePending.exchange(true, ordering: .acquiringAndReleasing) {
            Posix.eventfdSignal(wakeFD)
        }
    }

    /// Runs `body` on the loop and returns its result to async code.
    public func submit<T: Sendable>(_ body: @escaping @Sendable () throws -> T) async throws -> T {
        try await withCheckedThrowingContinuation { (cont: CheckedContinuation<T, Error>) in
            execute {
                do { cont.resume(returning: try body()) } catch { cont.resume(throwing: error) }
            }
        }
    }

    public func stop() {
        stopRequested.store(true, ordering: .releasing)
        execute {}
    }

    // MARK: the loop

    /// Runs the loop on the calling thread until `stop()`.
    public func run() {
        threadID = pthread_self()
        started.store(true, ordering: .releasing)
        let maxEvents: Int32 = 512
        let events = UnsafeMutablePointer<epoll_event>.allocate(capacity: Int(maxEvents))
        defer { events.deallocate() }
        while !stopRequested.load(ordering: .acquiring) {
            let timeout = nextTimeoutMs()
            let n: Int
            do { n = try Posix.epollWait(epfd, events, maxEvents, timeoutMs: timeout) } catch {
                fatalError("\(error)")
            }
            now = monotonicNanos()
            for i in 0..<n {
                let ev = events[i]
                let data = ev.data.u64
                if data == UInt64(UInt32.max) {
                    Posix.eventfdDrain(wakeFD)
                    continue
                }
                let fd = Int(UInt32(truncatingIfNeeded: data))
                let gen = UInt32(truncatingIfNeeded: data >> 32)
                guard fd < registrations.count, generations[fd] == gen, let target = registrations[fd] else { continue }
                target.handleEvents(ev.events)
            }
            runAfterTickWork()
            runPendingTasks()
            runDueTimers()
            runAfterTickWork()
        }
        // Registered objects hold the loop strongly: let them go with it.
        registrations.removeAll()
    }

    private func runAfterTickWork() {
        while !afterTick.isEmpty {
            let work = afterTick
            afterTick.removeAll(keepingCapacity: true)
            for w in work { w() }
        }
    }

    private func runPendingTasks() {
        wakePending.store(false, ordering: .releasing)
        let tasks = pending.withLock { q -> [@Sendable () -> Void] in
            let t = q
            q.removeAll(keepingCapacity: true)
            return t
        }
        // Tasks handed over in one batch (events relayed from another loop) write once per connection.
        deferringWrites { for t in tasks { t() } }
    }

    private func runDueTimers() {
        let current = monotonicNanos()
        now = current
        while let top = timers.peek(), top.deadline <= current {
            timers.pop()
            if let body = top.body {
                top.body = nil
                body()
            }
        }
    }

    private func nextTimeoutMs() -> Int32 {
        if !afterTick.isEmpty { return 0 }
        if pending.withLock({ !$0.isEmpty }) { return 0 }
        while let top = timers.peek(), top.isCancelled { timers.pop() }
        guard let top = timers.peek() else { return -1 }
        let current = monotonicNanos()
        if top.deadline <= current { return 0 }
        let ms = (top.deadline - current + 999_999) / 1_000_000
        return Int32(min(ms, 60_000))
    }
}

/// A binary min-heap of timers ordered by (deadline, sequence).
struct TimerHeap {
    private var items: [TimerHandle] = []

    func peek() -> TimerHandle? { items.first }

    mutating func push(_ t: TimerHandle) {
        items.append(t)
        var i = items.count - 1
        while i > 0 {
            let p = (i - 1) / 2
            if less(items[i], items[p]) { items.swapAt(i, p); i = p } else { break }
        }
    }

    @discardableResult
    mutating func pop() -> TimerHandle? {
        guard !items.isEmpty else { return nil }
        let top = items[0]
        let last = items.removeLast()
        if !items.isEmpty {
            items[0] = last
            var i = 0
            while true {
                let l = 2 * i + 1, r = l + 1
                var m = i
                if l < items.count && less(items[l], items[m]) { m = l }
                if r < items.count && less(items[r], items[m]) { m = r }
                if m == i { break }
                items.swapAt(i, m)
                i = m
            }
        }
        return top
    }


    @inline(__always) private func less(_ a: TimerHandle, _ b: TimerHandle) -> Bool {
        a.deadline < b.deadline || (a.deadline == b.deadline && a.sequence < b.sequence)
    }
}

// Swift concurrency: an actor whose executor is a loop runs its methods on the loop thread,
// so it can touch that loop's connections without locks.
extension EventLoop: SerialExecutor {
    public func enqueue(_ job: consuming ExecutorJob) {
        let job = UnownedJob(job)
        execute { job.runSynchronously(on: self.asUnownedSerialExecutor()) }
    }

    public func asUnownedSerialExecutor() -> UnownedSerialExecutor {
        UnownedSerialExecutor(ordinary: self)
    }
}

/// A fixed set of loops, one thread each (default: one per core).
public final class EventLoopGroup: @unchecked Sendable {
    public let loops: [EventLoop]
    private var threads: [pthread_t] = []
    private let next = Atomic<Int>(0)

    public init(count: Int, namePrefix: String = "loop") throws(SystemError) {
        var ls: [EventLoop] = []
        for i in 0..<max(1, count) { ls.append(try EventLoop(name: "\(namePrefix)-\(i)")) }
        loops = ls
    }

    /// Starts every loop on its own thread.
    public func start() {
        for loop in loops {
            let box = Unmanaged.passRetained(loop)
            var t = pthread_t()
            let rc = pthread_create(&t, nil, { arg in
                let loop = Unmanaged<EventLoop>.fromOpaque(arg!).takeRetainedValue()
                loop.run()
                return nil
            }, box.toOpaque())
            precondition(rc == 0, "pthread_create failed: \(rc)")
            threads.append(t)
        }
        // Wait until each loop knows its thread so `inEventLoop` is answerable.
        for loop in loops {
            while !loopStarted(loop) { usleep(100) }
        }
    }

    private func loopStarted(_ loop: EventLoop) -> Bool { loop.threadKnown }

    public func nextLoop() -> EventLoop {
        loops[next.wrappingAdd(1, ordering: .relaxed).oldValue % loops.count]
    }

    public func shutdown() {
        for l in loops { l.stop() }
        for t in threads { pthread_join(t, nil) }
        threads.removeAll()
    }
}

extension EventLoop {
    var threadKnown: Bool { started.load(ordering: .acquiring) }
}

public enum CPU {
    public static var count: Int { max(1, Int(sysconf(Int32(_SC_NPROCESSORS_ONLN)))) }
}
