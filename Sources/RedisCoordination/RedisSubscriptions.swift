internal import CHiredis
import NetCore

/// A channel's handler, kept alive by the connection while subscribed. hiredis calls a
/// subscription's callback for every message, so (unlike a command's) it is not consumed by the
/// first call: it is released when hiredis is done with it (a NULL reply: unsubscribed, or the
/// context freed).
final class Subscription {
    let channel: String
    let onMessage: ([UInt8]) -> Void
    init(channel: String, onMessage: @escaping ([UInt8]) -> Void) {
        self.channel = channel
        self.onMessage = onMessage
    }
}

extension RedisConnection {
    /// Subscribes `onMessage` (called on the loop with each payload) to `channel`, and again after
    /// every reconnect. A connection that subscribes is in Redis's subscribe mode: give it no
    /// other commands (use another connection for PUBLISH). Loop thread.
    public func subscribe(_ channel: String, onMessage: @escaping ([UInt8]) -> Void) {
        let s = Subscription(channel: channel, onMessage: onMessage)
        subscriptions[channel] = s
        if isReady { issueSubscribe(s) }
    }

    func resubscribeAll() {
        for s in subscriptions.values { issueSubscribe(s) }
    }

    private func issueSubscribe(_ s: Subscription) {
        guard let c = contextPointer else { return }
        let priv = Unmanaged.passRetained(s).toOpaque()
        let ok: Int32 = "SUBSCRIBE".withCString { cmd in
            s.channel.withCString { ch in
                var argv: [UnsafePointer<CChar>?] = [cmd, ch]
                var lengths = [9, s.channel.utf8.count]
                return argv.withUnsafeMutableBufferPointer { buf in
                    redisAsyncCommandArgv(c, { _, reply, priv in
                        guard let priv else { return }
                        guard let r = reply?.assumingMemoryBound(to: redisReply.self) else {
                            Unmanaged<Subscription>.fromOpaque(priv).release()  // hiredis is done with it
                            return
                        }
                        let sub = Unmanaged<Subscription>.fromOpaque(priv).takeUnretainedValue()
                        // ["message", channel, payload] (or ["subscribe", channel, count] once)
                        if case .array(let parts) = RedisReply.copy(r), parts.count == 3, parts[0].string == "message",
                           case .bulk(let payload) = parts[2] {
                            sub.onMessage(payload)
                        }
                    }, priv, 2, buf.baseAddress, &lengths)
                }
            }
        }
        if ok != REDIS_OK { Unmanaged<Subscription>.fromOpaque(priv).release() }
    }
}
