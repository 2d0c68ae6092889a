import Runtime
import Synchronization
import XCTest

/// Node lifecycle: services start in order and stop in reverse, a failed start stops what was
/// started, and draining waits on a signal.
final class ServiceGroupTests: XCTestCase {
    struct Refused: Error {}
    let logger = Logger(label: "t", level: .error)

    func testStartsInOrderStopsInReverseWithTheDeadline() throws {
        let log = Mutex<[String]>([])
        let group = ServiceGroup(logger: logger)
        for name in ["loops", "redis", "workers", "listener"] {
            try group.start(ServiceHandle(name, start: { log.withLock { $0.append("start \(name)") } },
                                          stop: { d in log.withLock { $0.append("stop \(name) \(d)") } }))
        }
        XCTAssertEqual(group.running, ["loops", "redis", "workers", "listener"])
        group.stopAll(deadline: 42)
        XCTAssertEqual(log.withLock { $0 }, ["start loops", "start redis", "start workers", "start listener",
                                              "stop listener 42", "stop workers 42", "stop redis 42", "stop loops 42"])
        XCTAssertEqual(group.running, [])
        group.stopAll(deadline: 43)
        XCTAssertEqual(log.withLock { $0.count }, 8, "stopped once")
    }

    func testAFailedStartStopsWhatWasStartedAndRethrows() {
        let log = Mutex<[String]>([])
        let group = ServiceGroup(logger: logger)
        XCTAssertNoThrow(try group.start(ServiceHandle("a", stop: { _ in log.withLock { $0.append("stop a") } })))
        XCTAssertNoThrow(try group.start(ServiceHandle("b", stop: { _ in log.withLock { $0.append("stop b") } })))
        XCTAssertThrowsError(try group.start(ServiceHandle("c", start: { throw Refused() }, stop: { _ in log.withLock { $0.append("stop c") } })))
        XCTAssertEqual(log.withLock { $0 }, ["stop b", "stop a"], "c never started, so it is not stopped")
        XCTAssertEqual(group.running, [])
    }

    func testIdleSignalFiresOnceWhenTheCountReachesZero() {
        let signal = IdleSignal()
        let count = Atomic<Int>(2)
        let fired = Atomic<Int>(0)
        signal.whenIdle({ count.load(ordering: .relaxed) == 0 }) { fired.add(1, ordering: .relaxed) }
        XCTAssertEqual(fired.load(ordering: .relaxed), 0, "work in flight")
        count.subtract(1, ordering: .relaxed)
        XCTAssertEqual(fired.load(ordering: .relaxed), 0)
        count.subtract(1, ordering: .relaxed)
        signal.fire()
        signal.fire()
        XCTAssertEqual(fired.load(ordering: .relaxed), 1, "once")
        signal.whenIdle({ true }) { fired.add(1, ordering: .relaxed) }
        XCTAssertEqual(fired.load(ordering: .relaxed), 2, "already idle: at once")
    }
}
