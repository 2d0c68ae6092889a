import Domain
import Foundation
import NetCore
import RedisCoordination
import Runtime
import Synchronization
import XCTest

/// Events between nodes over Redis pub/sub: in order, one message each, nobody-listening is
/// visible, and a subscription survives its connection being dropped.
final class LiveEventRelayTests: RedisTestCase {
    func testEventsArriveInOrderAndSubscriptionsSurviveReconnects() throws {
        let pub = try connect()
        let sub = try connect()
        let relay = RedisEventRelay(publisher: pub, subscriber: RedisSubscriber(client: sub, logger: logger))
        let channel = "tokens:test-\(UUID().uuidString.prefix(8))"
        let got = Mutex<[String]>([])
        relay.subscribe(channel: channel) { m in
            if case .keepalive(let id) = m { got.withLock { $0.append(id) } }
        }
        usleep(100_000)  // the SUBSCRIBE goes out on its own connection
        let receivers = Mutex<[Int?]>([])
        for i in 0..<1000 {
            relay.publish(channel: channel, .keepalive(requestID: "e\(i)")) { n in receivers.withLock { $0.append(n) } }
        }
        let deadline = Date().addingTimeInterval(5)
        while got.withLock({ $0.count }) < 1000 && Date() < deadline { usleep(5000) }
        XCTAssertEqual(got.withLock { $0 }, (0..<1000).map { "e\($0)" }, "every event, in order")
        XCTAssertEqual(Set(receivers.withLock { $0 }), [1])
        // Nobody listens on another channel: the publisher can tell (and stop the generation).
        let none = Mutex<Int?>(-1)
        relay.publish(channel: channel + ":nobody", .keepalive(requestID: "x")) { n in none.withLock { $0 = n } }
        usleep(100_000)
        XCTAssertEqual(none.withLock { $0 }, 0)
        // The subscriber's connection is killed: it reconnects and subscribes again by itself.
        XCTAssertEqual(try call(pub, ["CLIENT", "KILL", "TYPE", "pubsub"]).get().isError, false)
        var delivered = false
        let until = Date().addingTimeInterval(5)
        while !delivered && Date() < until {
            let n = Mutex<Int?>(nil)
            relay.publish(channel: channel, .keepalive(requestID: "after")) { v in n.withLock { $0 = v } }
            usleep(100_000)
            delivered = n.withLock { $0 } == 1
        }
        XCTAssertTrue(delivered, "resubscribed after the connection was dropped")
        XCTAssertEqual(got.withLock { $0.last }, "after")
        // Something that is not a relay message is dropped and counted, and what follows still arrives.
        XCTAssertEqual(try call(pub, ["PUBLISH", channel, "{not a message"]).get().integer, 1)
        relay.publish(channel: channel, .keepalive(requestID: "after-garbage")) { _ in }
        let end = Date().addingTimeInterval(3)
        while got.withLock({ $0.last }) != "after-garbage" && Date() < end { usleep(5000) }
        XCTAssertEqual(got.withLock { $0.last }, "after-garbage")
        XCTAssertEqual(relay.undecodable.load(ordering: .relaxed), 1)
    }
}
