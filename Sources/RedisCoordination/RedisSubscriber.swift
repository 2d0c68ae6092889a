internal import CHiredis
import Dispatch
import NetCore
import Runtime
import Synchronization

/// Pub/sub on sockets of its own, read with hiredis's reply reader — not its async API, which
/// aborts the process on the first sharded message (hiredis 0.14). On one server: `SUBSCRIBE`
/// (and `PUBLISH` through `RedisClient`); on a cluster: `SSUBSCRIBE` on the master that serves
/// each channel's slot (`SPUBLISH` goes to the same master, and its count of receivers is exact),
/// moved with the channel when the slot map changes (a failover, a resharding). Subscriptions
/// are made again after every reconnect. Loop-confined (the client's loop), except `isUp`.
public final class RedisSubscriber {
    let client: RedisClient
    var loop: EventLoop { client.loop }
    let logger: Logger
    private var handlers: [String: ([UInt8]) -> Void] = [:]
    /// Where each channel is subscribed (or being subscribed).
    private var placed: [String: ClusterSlots.Node] = [:]
    private var links: [ClusterSlots.Node: SubscriberLink] = [:]
    private var reassignQueued = false
    private let confirmedAll = Atomic<Bool>(true)

    public init(client: RedisClient, logger: Logger) {
        self.client = client
        self.logger = logger
        client.whenMapChanges { [weak self] in self?.reassignSoon() }
    }

    /// Whether the subscriptions are in place (any thread). On a cluster, whether the cluster
    /// answers: a channel whose master is failing over waits for its replica without taking the
    /// node out of service.
    public var isUp: Bool { client.isCluster ? client.isUp : isSubscribed }
    /// Whether every channel's subscription is confirmed (any thread).
    public var isSubscribed: Bool { confirmedAll.load(ordering: .relaxed) }

    var command: (subscribe: String, unsubscribe: String) {
        client.isCluster ? ("SSUBSCRIBE", "SUNSUBSCRIBE") : ("SUBSCRIBE", "UNSUBSCRIBE")
    }

    /// Subscribes `onMessage` (called on the loop with each payload) to `channel` (loop thread).
    public func subscribe(_ channel: String, onMessage: @escaping ([UInt8]) -> Void) {
        handlers[channel] = onMessage
        reassign()
    }

    /// Stops every subscription (loop thread).
    public func close() {
        handlers = [:]
        placed = [:]
        for l in links.values { l.close() }
        links = [:]
    }

    func deliver(_ channel: String, _ payload: [UInt8]) { handlers[channel]?(payload) }

    func reassignSoon() {
        guard !reassignQueued else { return }
        reassignQueued = true
        let me = UncheckedBox(self)
        loop.execute {
            me.value.reassignQueued = false
            me.value.reassign()
        }
    }

    /// Puts every channel on the link to the node that serves it now.
    func reassign() {
        for channel in handlers.keys {
            guard let node = client.master(forKey: channel) else { continue }  // the map is not known yet
            if let old = placed[channel], old == node, links[old] != nil { continue }
            if let old = placed[channel] { links[old]?.unsubscribe(channel) }
            placed[channel] = node
            link(to: node).subscribe(channel)
        }
        for (node, l) in links where l.channels.isEmpty {
            l.close()
            links[node] = nil
        }
        updateUp()
    }

    private func link(to node: ClusterSlots.Node) -> SubscriberLink {
        if let l = links[node] { return l }
        let l = SubscriberLink(node: node, owner: self)
        links[node] = l
        l.connect()
        return l
    }

    func updateUp() {
        confirmedAll.store(handlers.keys.allSatisfy { ch in placed[ch].flatMap { links[$0] }?.confirmed.contains(ch) == true },
                           ordering: .relaxed)
    }

    /// A link's server said the channel's slot is elsewhere (`MOVED`, or a `sunsubscribe` it sent
    /// by itself when the slot left it).
    func channelMoved(_ channel: String) {
        placed[channel] = nil
        client.refreshMapSoon()
        // Placed again once the map had time to change (at once, a stale map would send it back
        // to the node that just refused it, round trip after round trip).
        guard !movedQueued else { return }
        movedQueued = true
        _ = loop.schedule(afterNanos: 150_000_000) { [weak self] in
            guard let self else { return }
            self.movedQueued = false
            self.reassign()
        }
    }
    private var movedQueued = false
}

/// One subscriber socket to one Redis node: RESP written by hand, replies read with hiredis's
/// reader; reconnects with backoff (50 ms doubling to 2 s) and subscribes its channels again.
final class SubscriberLink: ConnectionHandler {
    let node: ClusterSlots.Node
    unowned let owner: RedisSubscriber
    private(set) var channels = Set<String>()
    private(set) var confirmed = Set<String>()
    private var connection: Connection?
    private var ready = false
    private var closed = false
    private var backoffNanos: UInt64 = 50_000_000
    private var reader: UnsafeMutablePointer<redisReader>?

    init(node: ClusterSlots.Node, owner: RedisSubscriber) {
        self.node = node
        self.owner = owner
    }

    func subscribe(_ channel: String) {
        channels.insert(channel)
        if ready { write([owner.command.subscribe, channel]) }
    }

    func unsubscribe(_ channel: String) {
        channels.remove(channel)
        confirmed.remove(channel)
        if ready { write([owner.command.unsubscribe, channel]) }
    }

    func close() {
        closed = true
        watch?.cancel()
        connection?.close(afterFlush: false)
        connection = nil
        freeReader()
    }

    /// Resolves the name off the loop (getaddrinfo blocks), then connects on it.
    func connect() {
        guard !closed else { return }
        let loop = owner.loop, node = node, me = UncheckedBox(self)
        DispatchQueue.global().async {
            let address = try? SocketAddress.resolve(host: node.host, port: node.port)
            loop.execute {
                let l = me.value
                guard !l.closed else { return }
                guard let address else { return l.retry("cannot resolve \(node.host)") }
                do {
                    let c = try Connection.connect(to: address, loop: loop) { c, error in
                        guard error == nil else { return }  // connectionClosed follows
                        l.connected(c)
                    }
                    c.handler = l
                    l.connection = c
                    l.armWatch()
                } catch {
                    l.retry("\(error)")
                }
            }
        }
    }

    /// A connect that does not finish within 1 s, or a link silent for 10 s (it is pinged every
    /// 3 s), is dropped and made again: a dead host does not answer with a reset.
    private var watch: TimerHandle?
    private var lastHeardAt: UInt64 = 0

    fileprivate func armWatch() {
        watch?.cancel()
        let startedAt = owner.loop.now
        lastHeardAt = startedAt
        watch = owner.loop.schedule(afterNanos: 1_000_000_000) { [weak self] in self?.check(startedAt: startedAt) }
    }

    private func check(startedAt: UInt64) {
        guard !closed, let c = connection else { return }
        let now = owner.loop.now
        if !ready || now &- lastHeardAt > 10_000_000_000 { return c.abort(error: nil) }
        write(["PING"])
        watch = owner.loop.schedule(afterNanos: 3_000_000_000) { [weak self] in self?.check(startedAt: startedAt) }
    }

    private func connected(_ c: Connection) {
        freeReader()
        reader = redisReaderCreate()
        ready = true
        backoffNanos = 50_000_000
        if let pw = owner.client.endpoint.password { write(["AUTH", pw]) }
        for ch in channels.sorted() { write([owner.command.subscribe, ch]) }
    }

    private func retry(_ why: String) {
        ready = false
        confirmed = []
        owner.updateUp()
        guard !closed else { return }
        owner.logger.debug("redis subscriber reconnecting", ["node": "\(node.host):\(node.port)", "why": why])
        let delay = backoffNanos
        backoffNanos = min(backoffNanos * 2, 2_000_000_000)
        _ = owner.loop.schedule(afterNanos: delay) { [weak self] in
            guard let self, !self.closed else { return }
            // The node may serve other slots now (a failover): ask where the channels belong.
            self.owner.client.refreshMapSoon()
            self.connect()
        }
    }

    private func freeReader() {
        if let r = reader { redisReaderFree(r) }
        reader = nil
    }

    /// RESP: `*N\r\n` then `$len\r\narg\r\n` for each argument.
    private func write(_ args: [String]) {
        var out: [UInt8] = Array("*\(args.count)\r\n".utf8)
        for a in args {
            out += Array("$\(a.utf8.count)\r\n".utf8)
            out += Array(a.utf8)
            out += [13, 10]
        }
        connection?.write(out)
    }

    func connectionRead(_ connection: Connection, _ bytes: UnsafeMutableRawBufferPointer) {
        guard let reader, let base = bytes.baseAddress else { return }
        lastHeardAt = owner.loop.now
        guard redisReaderFeed(reader, base.assumingMemoryBound(to: CChar.self), bytes.count) == REDIS_OK else {
            return connection.abort(error: nil)
        }
        while true {
            var raw: UnsafeMutableRawPointer?
            guard redisReaderGetReply(reader, &raw) == REDIS_OK else { return connection.abort(error: nil) }
            guard let raw else { break }
            let reply = RedisReply.copy(raw.assumingMemoryBound(to: redisReply.self))
            freeReplyObject(raw)
            handle(reply)
            if self.reader == nil { return }  // closed while handling
        }
    }

    private func handle(_ reply: RedisReply) {
        switch reply {
        case .array(let parts) where parts.count == 3:
            guard let kind = parts[0].string?.lowercased(), let channel = parts[1].string else { return }
            switch kind {
            case "message", "smessage":
                if case .bulk(let payload) = parts[2] { owner.deliver(channel, payload) }
            case "subscribe", "ssubscribe":
                if channels.contains(channel) { confirmed.insert(channel) }
                owner.updateUp()
            case "sunsubscribe":
                // Sent by the server itself when the slot left this node; ours are answered here too.
                confirmed.remove(channel)
                if channels.remove(channel) != nil { owner.channelMoved(channel) }
            default:
                break
            }
        case .error(let e):
            if case .moved? = ClusterSlots.Redirect(error: e) {
                // Which channel is not said: have every one of them placed again.
                for ch in channels { owner.channelMoved(ch) }
                channels = []
                confirmed = []
            } else {
                owner.logger.warning("redis subscriber error", ["node": "\(node.host):\(node.port)", "error": e])
                connection?.close(afterFlush: false)
            }
        default:
            break  // +OK of AUTH
        }
    }

    func connectionClosed(_ connection: Connection, error: SystemError?) {
        guard self.connection === connection else { return }
        self.connection = nil
        watch?.cancel()
        freeReader()
        retry(error.map { "\($0)" } ?? "closed")
    }
}
