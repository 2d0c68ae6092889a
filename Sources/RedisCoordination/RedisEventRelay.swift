import Domain
import NetCore
import Synchronization

/// The relay on Redis pub/sub: PUBLISH on the pipelined command client (one message per event,
/// written at once), SUBSCRIBE on sockets of its own (subscribe mode takes no other commands). On
/// a cluster: SPUBLISH and SSUBSCRIBE (sharded pub/sub: a channel lives on its slot's master,
/// and the count of receivers SPUBLISH answers is exact; classic PUBLISH is broadcast to every
/// node and counts only the receivers of the node it reached).
public final class RedisEventRelay: EventRelay, @unchecked Sendable {
    let publisher: RedisClient
    let subscriber: RedisSubscriber
    let timeoutNanos: UInt64
    let publishCommand: String

    public init(publisher: RedisClient, subscriber: RedisSubscriber, timeoutNanos: UInt64 = 1_000_000_000) {
        self.publisher = publisher
        self.subscriber = subscriber
        self.timeoutNanos = timeoutNanos
        publishCommand = publisher.isCluster ? "SPUBLISH" : "PUBLISH"
    }

    public func publish(channel: String, _ message: RelayMessage, done: @escaping @Sendable (Int?) -> Void) {
        let me = UncheckedBox(self)
        let payload = message.bytes
        let body: @Sendable () -> Void = {
            let r = me.value
            r.publisher.send([r.publishCommand, channel, String(decoding: payload, as: UTF8.self)], timeoutNanos: r.timeoutNanos) { res in
                if case .success(.integer(let n)) = res { done(Int(n)) } else { done(nil) }
            }
        }
        if publisher.loop.inEventLoop { body() } else { publisher.loop.execute(body) }
    }

    /// Messages that cannot be read are dropped (and counted: `undecodable`).
    public func subscribe(channel: String, _ onMessage: @escaping @Sendable (RelayMessage) -> Void) {
        let me = UncheckedBox(self)
        subscriber.loop.execute {
            me.value.subscriber.subscribe(channel) { bytes in
                guard let message = try? RelayMessage.decode(bytes) else {
                    me.value.undecodable.add(1, ordering: .relaxed)
                    return
                }
                onMessage(message)
            }
        }
    }

    /// Messages received that could not be read.
    public let undecodable = Atomic<Int>(0)
}
