import NetCore
import Runtime
import Synchronization

/// Publishes this node's upstream status to Redis every 2 s (admin status reads it) until stopped.
public final class StatusPublisher: @unchecked Sendable {
    let connection: RedisClient
    let key: String
    let status: @Sendable () -> String
    private let stopped = Atomic<Bool>(false)
    private var timer: TimerHandle?

    public init(connection: RedisClient, key: String, status: @escaping @Sendable () -> String) {
        self.connection = connection
        self.key = key
        self.status = status
    }

    public func start() {
        let box = UncheckedBox(self)
        connection.loop.execute { box.value.publish() }
    }

    public func stop() {
        stopped.store(true, ordering: .relaxed)
        let box = UncheckedBox(self)
        connection.loop.execute { box.value.timer?.cancel() }
    }

    private func publish() {
        guard !stopped.load(ordering: .relaxed) else { return }
        connection.send(["SET", key, status(), "PX", "6000"], timeoutNanos: 1_000_000_000) { _ in }
        timer = connection.loop.schedule(afterNanos: 2_000_000_000) { [weak self] in self?.publish() }
    }
}
