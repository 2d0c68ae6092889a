import Domain
import NetCore
import Runtime
import Synchronization

/// A subscriber that publishes one completion's events to a relay channel as they happen (one
/// message each, never batched by time), with a keepalive after `keepaliveNanos` of quiet so the
/// receiver can tell "slow" from "dead". A publish nobody received (or that could not be sent)
/// calls `onNobodyListening` once (with nil when the relay could not be reached, 0 when it was
/// and nobody listened): the generation should stop.
/// Used by a worker (to the gateway holding the client) and by a gateway (to another gateway
/// attached to one of its streams). Confined to `loop`.
public final class RelayPublisher: CompletionSubscriber, @unchecked Sendable {
    public let loop: EventLoop
    let relay: EventRelay
    let channel: String
    let routingKey: String
    /// Named on `accepted` so the gateway can send cancels to the right worker.
    let worker: String?
    let keepaliveNanos: UInt64
    public var onNobodyListening: (@Sendable (_ receivers: Int?) -> Void)?
    /// Called on `loop` after the final event is published.
    public var onEnd: (() -> Void)?
    private var lastSentNanos: UInt64 = 0
    private var keepaliveTimer: TimerHandle?
    private var ended = false
    private let gone = Atomic<Bool>(false)

    /// Set when the receiver is a stream in this process: messages go straight to it.
    let target: RelayTarget?

    public init(loop: EventLoop, relay: EventRelay, channel: String, routingKey: String, worker: String?, keepaliveNanos: UInt64,
                target: RelayTarget? = nil) {
        self.target = target
        self.loop = loop
        self.relay = relay
        self.channel = channel
        self.routingKey = routingKey
        self.worker = worker
        self.keepaliveNanos = keepaliveNanos
    }

    public func receive(_ event: CompletionEvent) {
        guard !ended else { return }
        var named: String?
        if case .accepted = event { named = worker }
        publish(.event(requestID: routingKey, event, worker: named))
        switch event {
        case .accepted: armKeepalive()
        case .done, .failed: end()
        case .delta: break
        }
    }

    public func abortTransport() {
        guard !ended else { return }
        publish(.abort(requestID: routingKey))
        end()
    }

    /// Only a direct target can say; the Redis relay cannot (Redis bounds its own buffers).
    public var isBacklogged: Bool { target?.isBacklogged ?? false }

    /// Whether the receiver went away (a publish reached nobody).
    public var receiverGone: Bool { gone.load(ordering: .relaxed) }

    private func end() {
        ended = true
        keepaliveTimer?.cancel()
        keepaliveTimer = nil
        onEnd?()
        onEnd = nil
    }

    private func publish(_ message: RelayMessage) {
        lastSentNanos = loop.now
        if let target { return target.deliver(message) }
        let gone = UncheckedBox(self)
        relay.publish(channel: channel, message) { receivers in
            guard receivers == nil || receivers == 0 else { return }
            let me = gone.value
            if !me.gone.exchange(true, ordering: .relaxed) { me.onNobodyListening?(receivers) }
        }
    }

    private func armKeepalive() {
        guard keepaliveNanos > 0 else { return }
        keepaliveTimer = loop.schedule(afterNanos: keepaliveNanos) { [weak self] in
            guard let self, !self.ended else { return }
            if self.loop.now &- self.lastSentNanos >= self.keepaliveNanos * 9 / 10 {
                self.publish(.keepalive(requestID: self.routingKey))
            }
            self.armKeepalive()
        }
    }
}
