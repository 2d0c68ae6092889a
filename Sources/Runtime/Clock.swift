import CLinux
import Synchronization

/// Monotonic time in nanoseconds.
@inline(__always) public func monotonicNanos() -> UInt64 { clinux_monotonic_ns() }

/// Wall-clock time in nanoseconds since 1970 (for times other nodes and clients read).
@inline(__always) public func wallClockNanos() -> UInt64 { clinux_realtime_ns() }

/// Seeds for generations that have none of their own: a SplitMix64 sequence from one system
/// random seed per process. Unpredictable enough for sampling, and no syscall per completion
/// (the system generator costs a getrandom call each time).
public enum GenerationSeeds {
    private static let state = Atomic<UInt64>(UInt64.random(in: 0...UInt64.max))

    public static func next() -> UInt64 {
        var z = state.wrappingAdd(0x9E37_79B9_7F4A_7C15, ordering: .relaxed).newValue
        z = (z ^ (z >> 30)) &* 0xBF58_476D_1CE4_E5B9
        z = (z ^ (z >> 27)) &* 0x94D0_49BB_1331_11EB
        return z ^ (z >> 31)
    }
}
