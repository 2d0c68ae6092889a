import CLinux

/// Monotonic time in nanoseconds.
@inline(__always) public func monotonicNanos() -> UInt64 { clinux_monotonic_ns() }
