import CLinux

/// Monotonic time in nanoseconds. Injected where timeouts are decided so tests can drive time.
public protocol Clock: Sendable {
    func nowNanos() -> UInt64
}

public struct MonotonicClock: Clock {
    public init() {}
    @inline(__always) public func nowNanos() -> UInt64 { clinux_monotonic_ns() }
}

@inline(__always) public func monotonicNanos() -> UInt64 { clinux_monotonic_ns() }
