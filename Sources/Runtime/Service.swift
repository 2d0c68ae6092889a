import Synchronization

/// A long-running part of a node (listeners, loops, connections, pullers, the replayer, the LISTEN
/// thread, warmups, the status publisher): started once, stopped gracefully by a deadline.
public protocol Service: AnyObject, Sendable {
    var name: String { get }
    func start() throws
    /// Stops it, waiting at most until `deadline` (monotonic nanoseconds) for work in flight.
    func stop(deadline: UInt64)
}

/// A service made of two closures (the parts are built by the composition root, which knows how
/// each one starts and stops).
public final class ServiceHandle: Service, @unchecked Sendable {
    public let name: String
    private let starting: () throws -> Void
    private let stopping: (UInt64) -> Void

    public init(_ name: String, start: @escaping () throws -> Void = {}, stop: @escaping (_ deadline: UInt64) -> Void) {
        self.name = name
        starting = start
        stopping = stop
    }

    public func start() throws { try starting() }
    public func stop(deadline: UInt64) { stopping(deadline) }
}

/// Starts services in order and stops them in reverse: on a stop signal, or at once when one
/// fails to start (those already started are stopped, newest first, before the error is thrown).
public final class ServiceGroup: @unchecked Sendable {
    private let logger: Logger
    private let started = Mutex<[Service]>([])

    public init(logger: Logger) { self.logger = logger }

    /// Starts `service` after those before it; a failure stops every one started so far.
    public func start(_ service: Service) throws {
        do {
            try service.start()
        } catch {
            logger.error("service did not start", ["service": service.name, "error": "\(error)"])
            stopAll(deadline: monotonicNanos())
            throw error
        }
        started.withLock { $0.append(service) }
    }

    /// Names of the running services, in start order.
    public var running: [String] { started.withLock { $0.map(\.name) } }

    /// Stops every started service, newest first, each given what is left until `deadline`.
    public func stopAll(deadline: UInt64) {
        let all = started.withLock { s -> [Service] in
            let all = s
            s.removeAll()
            return all
        }
        for s in all.reversed() {
            logger.debug("stopping service", ["service": s.name])
            s.stop(deadline: deadline)
        }
    }
}

/// Wakes its waiters when a count of work in flight reaches zero (draining without polling).
public final class IdleSignal: Sendable {
    private let waiters = Mutex<[@Sendable () -> Void]>([])
    /// Waiters, readable without the lock: `fire` on a hot path costs one load when nobody waits.
    private let waiting = Atomic<Int>(0)
    public init() {}

    /// Calls `body` once, when `isIdle()` holds (at once if it holds now).
    public func whenIdle(_ isIdle: () -> Bool, _ body: @escaping @Sendable () -> Void) {
        waiters.withLock { $0.append(body) }
        waiting.add(1, ordering: .sequentiallyConsistent)
        if isIdle() { fire() }
    }

    /// The count may have reached zero: wake whoever waits.
    public func fire() {
        guard waiting.load(ordering: .sequentiallyConsistent) > 0 else { return }
        for w in waiters.withLock({ w -> [@Sendable () -> Void] in
            let all = w
            w.removeAll()
            waiting.subtract(all.count, ordering: .relaxed)
            return all
        }) { w() }
    }
}
