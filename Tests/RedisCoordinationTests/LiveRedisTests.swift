import Domain
import Foundation
import NetCore
import RedisCoordination
import Runtime
import Synchronization
import XCTest

/// Against the Redis the test script starts (REDIS_URL, with DEBUG enabled): fails, never skips,
/// without it.
class RedisTestCase: XCTestCase {
    var group: EventLoopGroup!
    var endpoint = RedisEndpoint()
    let logger = Logger(label: "test", level: .error)
    struct NoRedis: Error {}

    override func setUpWithError() throws {
        guard let url = ProcessInfo.processInfo.environment["REDIS_URL"], let e = RedisEndpoint(url: url) else {
            XCTFail("REDIS_URL is not set: run through scripts/test.sh, which starts Redis")
            throw NoRedis()
        }
        endpoint = e
        group = try EventLoopGroup(count: 1)
        group.start()
    }

    override func tearDown() { group?.shutdown() }

    var loop: EventLoop { group.loops[0] }

    /// A connected connection (waits for it to be ready).
    func connect(_ e: RedisEndpoint? = nil) throws -> RedisClient {
        let conn = RedisClient(endpoint: e ?? endpoint, loop: loop, logger: logger)
        let box = UncheckedBox(conn)
        loop.execute { box.value.start() }
        try waitUntil { box.value.isReady }
        return conn
    }

    func waitUntil(_ seconds: Double = 5, _ cond: @escaping @Sendable () -> Bool) throws {
        let deadline = Date().addingTimeInterval(seconds)
        let loop = self.loop
        while Date() < deadline {
            let ok = try runOnLoop { cond() }
            if ok { return }
            usleep(10_000)
        }
        _ = loop
        XCTFail("condition not met within \(seconds) s")
        throw NoRedis()
    }

    func runOnLoop<T: Sendable>(_ body: @escaping @Sendable () -> T) throws -> T {
        let result = Mutex<T?>(nil)
        let done = DispatchSemaphore(value: 0)
        loop.execute { result.withLock { $0 = body() }; done.signal() }
        done.wait()
        return result.withLock { $0! }
    }

    /// Sends a command and waits for its answer.
    func call(_ conn: RedisClient, _ args: [String], timeoutMs: UInt64 = 2000) -> Result<RedisReply, RedisError> {
        let result = Mutex<Result<RedisReply, RedisError>?>(nil)
        let done = DispatchSemaphore(value: 0)
        let box = UncheckedBox(conn)
        loop.execute {
            box.value.send(args, timeoutNanos: timeoutMs * 1_000_000) { r in result.withLock { $0 = r }; done.signal() }
        }
        done.wait()
        return result.withLock { $0! }
    }
}

final class LiveRedisConnectionTests: RedisTestCase {
    func testEndpointURLs() {
        XCTAssertEqual(RedisEndpoint(url: "redis://127.0.0.1:6390/2"), RedisEndpoint(host: "127.0.0.1", port: 6390, db: 2))
        XCTAssertEqual(RedisEndpoint(url: "redis://:s3cret@db.local:7000"), RedisEndpoint(host: "db.local", port: 7000, password: "s3cret"))
        XCTAssertEqual(RedisEndpoint(url: "redis://localhost")?.port, 6379)
        XCTAssertNil(RedisEndpoint(url: "http://x"))
        XCTAssertNil(RedisEndpoint(url: "redis://h:99999"))
        XCTAssertEqual(RedisEndpoint(url: "redis://:pw@h:1/0")?.masked, "redis://:***@h:1/0")
    }

    func testCommandsArePipelinedAndAnsweredInOrder() throws {
        let conn = try connect()
        XCTAssertEqual(try call(conn, ["SET", "t:k", "v"]).get(), .status("OK"))
        XCTAssertEqual(try call(conn, ["GET", "t:k"]).get().string, "v")
        XCTAssertEqual(try call(conn, ["GET", "t:missing"]).get(), .null)
        XCTAssertTrue(try call(conn, ["NOT-A-COMMAND"]).get().isError, "a Redis error is a reply, not a failure")
        // 1,000 commands written back to back (one loop turn) come back in order.
        let seen = Mutex<[Int64]>([])
        let done = DispatchSemaphore(value: 0)
        let box = UncheckedBox(conn)
        loop.execute {
            _ = box.value
            for i in 0..<1000 {
                box.value.send(["INCR", "t:counter:\(ProcessInfo.processInfo.processIdentifier)"], timeoutNanos: 2_000_000_000) { r in
                    let n = (try? r.get().integer) ?? -1
                    if seen.withLock({ $0.append(n); return $0.count }) == 1000 { done.signal() }
                    _ = i
                }
            }
        }
        done.wait()
        let values = seen.withLock { $0 }
        XCTAssertEqual(values, values.sorted())
        XCTAssertEqual(values.count, 1000)
        _ = call(conn, ["DEL", "t:counter:\(ProcessInfo.processInfo.processIdentifier)"])
    }

    /// hiredis 0.14 has no timeouts: the loop's deadline fails a command Redis does not answer in
    /// time, drops the connection and makes a new one.
    func testStuckRedisTimesOutAndTheConnectionIsRemade() throws {
        let conn = try connect()
        let other = try connect()
        let box = UncheckedBox(other)
        loop.execute { box.value.send(["DEBUG", "SLEEP", "0.5"], timeoutNanos: 5_000_000_000) { _ in } }
        usleep(50_000)
        let start = Date()
        XCTAssertEqual(call(conn, ["PING"], timeoutMs: 100), .failure(.timeout))
        XCTAssertLessThan(Date().timeIntervalSince(start), 0.4, "the timeout is ours, not Redis's sleep")
        XCTAssertEqual(call(conn, ["PING"]), .failure(.unavailable), "fails fast while reconnecting")
        let ready = UncheckedBox(conn)
        try waitUntil { ready.value.isReady }
        XCTAssertEqual(try call(conn, ["PING"]).get(), .status("PONG"))
    }

    func testDownRedisFailsFastAndReconnectsWhenBack() throws {
        // Nothing listens here: connecting fails, commands fail at once, nothing hangs.
        let conn = RedisClient(endpoint: RedisEndpoint(host: "127.0.0.1", port: 1), loop: loop, logger: logger)
        let box = UncheckedBox(conn)
        loop.execute { box.value.start() }
        usleep(100_000)
        let start = Date()
        XCTAssertEqual(call(conn, ["PING"]), .failure(.unavailable))
        XCTAssertLessThan(Date().timeIntervalSince(start), 0.05)
        loop.execute { box.value.close() }
    }
}
