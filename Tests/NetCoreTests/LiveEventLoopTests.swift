import NetCore
import Runtime
import Synchronization
import XCTest

/// An actor that runs on a loop: its methods execute on the loop thread.
actor LoopBound {
    nonisolated let loop: EventLoop
    nonisolated var unownedExecutor: UnownedSerialExecutor { loop.asUnownedSerialExecutor() }
    var count = 0
    init(loop: EventLoop) { self.loop = loop }
    func bump() -> (Int, Bool) {
        count += 1
        return (count, loop.inEventLoop)
    }
}

final class LiveEventLoopTests: XCTestCase {
    var group: EventLoopGroup!

    override func setUp() {
        group = try! EventLoopGroup(count: 2)
        group.start()
    }

    override func tearDown() { group.shutdown() }

    func testExecuteRunsOnLoopThread() async throws {
        let loop = group.loops[0]
        let onLoop = try await loop.submit { loop.inEventLoop }
        XCTAssertTrue(onLoop)
        XCTAssertFalse(loop.inEventLoop)
    }

    func testManyThreadsHandOffWork() async throws {
        let loop = group.loops[1]
        let counter = Counter()
        await withTaskGroup(of: Void.self) { g in
            for _ in 0..<8 {
                g.addTask { for _ in 0..<1000 { loop.execute { counter.value.add(1, ordering: .relaxed) } } }
            }
        }
        let total = try await loop.submit { counter.value.load(ordering: .relaxed) }
        XCTAssertEqual(total, 8000)
    }

    func testTimersFireInDeadlineOrderAndCancel() async throws {
        let loop = group.loops[0]
        let order = Mutex<[Int]>([])
        let done = expectation(description: "timers")
        loop.execute {
            loop.schedule(afterNanos: 30_000_000) { order.withLock { $0.append(3) }; done.fulfill() }
            loop.schedule(afterNanos: 10_000_000) { order.withLock { $0.append(1) } }
            let cancelled = loop.schedule(afterNanos: 20_000_000) { order.withLock { $0.append(99) } }
            loop.schedule(afterNanos: 20_000_000) { order.withLock { $0.append(2) } }
            cancelled.cancel()
        }
        await fulfillment(of: [done], timeout: 2)
        XCTAssertEqual(order.withLock { $0 }, [1, 2, 3])
    }

    func testActorOnLoopExecutor() async {
        let bound = LoopBound(loop: group.loops[1])
        for i in 1...5 {
            let (n, onLoop) = await bound.bump()
            XCTAssertEqual(n, i)
            XCTAssertTrue(onLoop, "actor method ran off the loop thread")
        }
    }

    func testSubmitPropagatesErrors() async {
        struct Boom: Error {}
        do {
            _ = try await group.loops[0].submit { () throws -> Int in throw Boom() }
            XCTFail("expected an error")
        } catch {
            XCTAssertTrue(error is Boom)
        }
    }
}

final class ByteBufferTests: XCTestCase {
    func testAppendConsumeCompact() {
        var b = ByteBuffer()
        b.append(Array("hello world".utf8))
        b.consume(6)
        XCTAssertEqual(b.readableArray(), Array("world".utf8))
        b.append(Array("!".utf8))
        XCTAssertEqual(b.readableArray(), Array("world!".utf8))
        b.consume(6)
        XCTAssertTrue(b.isEmpty)
        XCTAssertEqual(b.readerIndex, 0)
    }

    func testLargeDrainedBufferReleasesMemory() {
        var b = ByteBuffer()
        b.append([UInt8](repeating: 1, count: 1 << 20))
        b.consume(1 << 20)
        XCTAssertLessThan(b.capacity, 64 * 1024)
    }
}

final class Counter: Sendable {
    let value = Atomic<Int>(0)
}

/// A listener refuses a port another socket already listens on, unless told to share it.
final class LiveListenerTests: XCTestCase {
    func testPortInUseIsRefusedUnlessShared() async throws {
        let group = try EventLoopGroup(count: 2)
        group.start()
        defer { group.shutdown() }
        let first = try TCPServer(group: group, host: "127.0.0.1", port: 0) { $0.close() }
        let port = first.boundAddress.port
        XCTAssertThrowsError(try TCPServer(group: group, host: "127.0.0.1", port: port) { $0.close() }) { e in
            XCTAssertEqual((e as? SystemError)?.errno, EADDRINUSE)
            XCTAssertTrue("\(e)".contains("--share-port"), "the error says how to share on purpose")
        }
        let shared = try TCPServer(group: group, host: "127.0.0.1", port: port, sharePort: true) { $0.close() }
        XCTAssertEqual(shared.boundAddress.port, port)
        await shared.close()
        await first.close()
        // Once both are gone the port is free again.
        let again = try TCPServer(group: group, host: "127.0.0.1", port: port) { $0.close() }
        await again.close()
    }
}
