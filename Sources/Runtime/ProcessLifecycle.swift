import CLinux
import Synchronization
#if canImport(Glibc)
import Glibc
#endif

/// SIGTERM and SIGINT for a long-running process, from its first instruction to its last.
/// The signals are blocked in every thread and taken by one watcher thread (sigwait), so they are
/// never lost and never land in a random thread. Before `running()` (start-up: migrations,
/// loading files, binding) a stop signal ends the process at once: there is nothing to drain yet
/// and start-up must never make a process unstoppable. After it, `wait()` returns the signal and
/// the caller drains.
public final class StopSignals: Sendable {
    private enum Phase { case starting, running }
    private let phase = Mutex(Phase.starting)
    private let received = Atomic<Int32>(0)
    private let wake: Int32  // eventfd the waiter sleeps on

    /// Call before any other thread starts (threads inherit the signal mask).
    public init() {
        var set = sigset_t()
        sigemptyset(&set)
        sigaddset(&set, SIGTERM)
        sigaddset(&set, SIGINT)
        pthread_sigmask(SIG_BLOCK, &set, nil)
        wake = eventfd(0, 0)
        let ctx = Unmanaged.passRetained(self).toOpaque()
        var t = pthread_t()
        pthread_create(&t, nil, { arg in
            let me = Unmanaged<StopSignals>.fromOpaque(arg!).takeRetainedValue()
            me.watch()
            return nil
        }, ctx)
        pthread_detach(t)
    }

    private func watch() {
        var set = sigset_t()
        sigemptyset(&set)
        sigaddset(&set, SIGTERM)
        sigaddset(&set, SIGINT)
        while true {
            var sig: Int32 = 0
            guard sigwait(&set, &sig) == 0 else { continue }
            let stopNow: Bool = phase.withLock { p in
                if case .starting = p { return true }
                return false
            }
            if stopNow {
                let msg = "stopped by signal \(sig) during start-up\n"
                _ = msg.withCString { write(2, $0, strlen($0)) }
                _exit(128 + sig)
            }
            received.store(sig, ordering: .releasing)
            var one: UInt64 = 1
            _ = write(wake, &one, 8)
        }
    }

    /// Start-up is over: from now on a stop signal is returned by `wait()`.
    public func running() {
        phase.withLock { $0 = .running }
    }

    /// Blocks until SIGTERM or SIGINT; returns which.
    public func wait() -> Int32 {
        running()
        while received.load(ordering: .acquiring) == 0 {
            var v: UInt64 = 0
            _ = read(wake, &v, 8)
        }
        return received.load(ordering: .acquiring)
    }
}

/// Children that must not outlive the process that started them (benchmark nodes and clients).
public enum ParentDeath {
    /// The environment variable a parent sets (to its pid) when its child must die with it.
    public static let variable = "PLAYGROUND_DIE_WITH_PARENT"

    /// In a child whose parent asked for it: SIGTERM arrives when the parent dies, however it
    /// dies (even SIGKILL). If the parent is already gone, exit now.
    public static func followParentIfAsked() {
        guard let v = getenv(variable), let parent = Int32(String(cString: v)) else { return }
        _ = clinux_set_parent_death_signal(SIGTERM)
        // The parent may have died before prctl: then we were re-parented already.
        if getppid() != parent { _exit(1) }
    }
}
