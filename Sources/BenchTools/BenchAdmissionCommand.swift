import Dispatch
import Domain
import Gateway
import NetCore
import RedisCoordination
import Runtime
import Synchronization
#if canImport(Glibc)
import Glibc
#endif

/// `playground bench-admission`: admission decisions per second through lua/admit.lua on one
/// Redis (pipelined: many decisions in flight on one connection), beside the in-memory ledger in
/// the same run. Users are spread so most decisions admit; leases are released as they go.
public enum BenchAdmissionCommand {
    public static let spec = CommandSpec("bench-admission", summary: "Admission decisions/s: lua/admit.lua on Redis (pipelined) vs in memory.", flags: [
        .option("redis-url", "URL", "the Redis to measure (or REDIS_URL)"),
        .option("decisions", "N", default: "200000", "decisions per side"),
        .option("in-flight", "N", default: "256", "decisions in flight on the connection"),
        .option("users", "N", default: "10000", "distinct users"),
        .option("lua-dir", "DIR", default: ProjectPaths.directory("lua", marker: "admit.lua"), "the Redis scripts"),
    ])

    public static func run(_ a: Arguments) throws -> Int32 {
        guard let url = a.optionalString("redis-url") ?? Arguments.environment("REDIS_URL"), let endpoint = RedisEndpoint(url: url) else {
            throw ArgumentError(message: "set REDIS_URL or --redis-url")
        }
        let total = try a.int("decisions"), inFlight = try a.int("in-flight"), users = try a.int("users")
        guard total > 0, inFlight > 0, users > 0 else { throw ArgumentError(message: "counts must be ≥ 1") }
        let quota = Quota(requestsPerMinute: 1_000_000, concurrency: 1_000_000)
        let group = try EventLoopGroup(count: 1, namePrefix: "bench-adm")
        group.start()
        defer { group.shutdown() }
        let loop = group.loops[0]
        let conn = RedisClient(endpoint: endpoint, loop: loop, logger: Logger(label: "bench", level: .warning))
        let cbox = UncheckedBox(conn)
        loop.execute { cbox.value.start() }
        let deadline = monotonicNanos() + 3_000_000_000
        while !conn.isUp { guard monotonicNanos() < deadline else { throw OperationalError(description: "cannot reach Redis") }; usleep(5000) }
        let redis = try RedisAdmission(connection: conn, scriptsDirectory: a.string("lua-dir"), defaults: quota,
                                       leaseTTLNanos: 30_000_000_000, timeoutNanos: 2_000_000_000, fallback: nil)
        let local = LocalAdmission(quota: { _ in quota })
        let run = "b\(UInt32.random(in: 0...UInt32.max))"
        // One user at high limits (auth off, or a service account with a large quota): its window
        // holds every decision of the last minute, so a per-decision cost that grows with the
        // window shows here and nowhere else.
        let sides: [(String, Admission, Int)] = [("redis admit.lua", redis, users), ("in memory", local, users),
                                                 ("redis admit.lua, one user", redis, 1), ("in memory, one user", local, 1)]
        for (i, (name, admission, n)) in sides.enumerated() {
            let r = measure(admission, loop: loop, total: total, inFlight: inFlight, users: n, run: run + "\(i)")
            printLine(String(format: "bench-admission: %@: %.0f decisions/s (%d decisions, %d in flight, %d users); latency p50 %.3f ms, p99 %.3f ms; %d refused, %d failed",
                             name, Double(total) / r.seconds, total, inFlight, n, r.p50, r.p99, r.refused, r.failed))
        }
        return 0
    }

    struct Result { var seconds = 0.0; var p50 = 0.0; var p99 = 0.0; var refused = 0; var failed = 0 }

    static func measure(_ admission: Admission, loop: EventLoop, total: Int, inFlight: Int, users: Int, run: String) -> Result {
        final class State: @unchecked Sendable {
            var started = 0, finished = 0, refused = 0, failed = 0
            var pumping = false
            var latencies: [UInt64] = []
        }
        let state = State()
        state.latencies.reserveCapacity(total)
        let done = DispatchSemaphore(value: 0)
        let t0 = monotonicNanos()
        let box = UncheckedBox(state)
        // Keeps `inFlight` decisions outstanding. A synchronous admission (in memory) completes
        // inside `startOne`; the pump loops instead of recursing, so the stack stays flat.
        @Sendable func pump() {
            let s = box.value
            guard !s.pumping else { return }
            s.pumping = true
            while s.started < total && s.started - s.finished < inFlight { startOne() }
            s.pumping = false
        }
        @Sendable func startOne() {
            let s = box.value
            let i = s.started
            s.started += 1
            let user = "\(run)-\(i % users)", id = "r\(i)"
            let t = monotonicNanos()
            admission.admit(user: user, requestID: id) { outcome in
                let go: @Sendable () -> Void = {
                    let s = box.value
                    s.latencies.append(monotonicNanos() - t)
                    switch outcome {
                    case .admitted: admission.release(user: user, requestID: id)
                    case .refused: s.refused += 1
                    case .unavailable, .ended, .running: s.failed += 1
                    }
                    s.finished += 1
                    if s.finished == total { done.signal() } else { pump() }
                }
                if loop.inEventLoop { go() } else { loop.execute(go) }
            }
        }
        loop.execute { pump() }
        done.wait()
        var r = Result()
        r.seconds = Double(monotonicNanos() - t0) / 1e9
        let sorted = state.latencies.sorted()
        r.p50 = Double(sorted[sorted.count / 2]) / 1e6
        r.p99 = Double(sorted[min(sorted.count - 1, sorted.count * 99 / 100)]) / 1e6
        r.refused = state.refused
        r.failed = state.failed
        return r
    }
}
