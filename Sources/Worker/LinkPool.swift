import Domain
import FleetCore
import JSON
import NetCore
import Runtime
import Synchronization

public struct LinkPoolConfiguration: Sendable {
    /// A link that sent nothing for this long sends a ping.
    public var pingNanos: UInt64 = 1_000_000_000
    /// A link that heard nothing for this long is dead: its streams stop.
    public var silenceNanos: UInt64 = 3_000_000_000
    /// Bytes a link may hold unsent (the gateway stopped reading); past this it closes and its
    /// streams stop: the worker's memory stays bounded.
    public var maxOutboundBytes = 4 << 20
    /// Unsent bytes past which the link's streams say they are backlogged: a backend that can
    /// wait (the built-in model) pauses, so a gateway slower than the model slows its streams
    /// instead of overflowing the link; one that stopped reading is found by the silence check.
    public var highWaterBytes = 256 << 10
    /// How long dialling and the handshake may take.
    public var connectNanos: UInt64 = 2_000_000_000
    public init() {}
}

/// The worker's stream links to gateways: one per gateway and event loop, dialled when a job for
/// that gateway first runs on the loop and kept for every later stream to it. A stream's events
/// are written on its generation's loop, which is its link's loop: no hop, no lock per token;
/// frames of several streams made in one loop turn leave in one write.
public final class LinkPool: @unchecked Sendable {
    let nodeID: String
    let auth: LinkAuth
    let configuration: LinkPoolConfiguration
    let logger: Logger
    /// Per loop (each only touched on its loop): gateway → link.
    private let perLoop = Mutex<[ObjectIdentifier: LoopLinks]>([:])

    public init(nodeID: String, auth: LinkAuth, configuration: LinkPoolConfiguration = LinkPoolConfiguration(), logger: Logger) {
        self.nodeID = nodeID
        self.auth = auth
        self.configuration = configuration
        self.logger = logger
    }

    final class LoopLinks {
        var links: [CompletionWire.LinkAddress: OutboundLink] = [:]
        /// Gateways whose link could not be opened lately: their streams use the relay until then.
        var unreachableUntil: [CompletionWire.LinkAddress: UInt64] = [:]
    }

    /// How long a gateway whose link failed before opening is not dialled again.
    static let retryNanos: UInt64 = 5_000_000_000

    /// A stream to the gateway at `address`, on `loop` (call on `loop`). nil: use the relay (the
    /// secret is not known yet, or that gateway's link failed to open lately).
    func open(_ address: CompletionWire.LinkAddress, key: String, loop: EventLoop,
              fallback: @escaping (RelayMessage) -> Void) -> LinkedStream? {
        guard auth.isReady() else { return nil }
        let mine = perLoop.withLock { m -> LoopLinks in
            if let l = m[ObjectIdentifier(loop)] { return l }
            let l = LoopLinks()
            m[ObjectIdentifier(loop)] = l
            return l
        }
        if let until = mine.unreachableUntil[address] {
            if loop.now < until { return nil }
            mine.unreachableUntil[address] = nil
        }
        let link: OutboundLink
        if let existing = mine.links[address], !existing.closed {
            link = existing
        } else {
            link = OutboundLink(pool: self, address: address, loop: loop) { [weak mine] gone, opened in
                if mine?.links[address] === gone { mine?.links[address] = nil }
                if !opened { mine?.unreachableUntil[address] = loop.now + LinkPool.retryNanos }
            }
            mine.links[address] = link
            link.dial()
        }
        return link.stream(key: key, fallback: fallback)
    }
}

/// One stream on a link: the generation's relay publisher delivers to it; the gateway's cancel
/// and the link's loss come back through `onCancel` and `onGone`. Confined to its loop.
final class LinkedStream: RelayTarget, @unchecked Sendable {
    let id: UInt32
    let key: String
    let link: OutboundLink
    var onCancel: (() -> Void)?
    var onGone: (() -> Void)?
    private var ended = false
    /// Sends through the relay instead (the link never opened).
    private let fallback: (RelayMessage) -> Void
    /// What it sent while the link was still opening (replayed on the relay if it never does).
    private var unconfirmed: [RelayMessage]? = []
    private var onRelay = false

    init(id: UInt32, key: String, link: OutboundLink, fallback: @escaping (RelayMessage) -> Void) {
        self.id = id
        self.key = key
        self.link = link
        self.fallback = fallback
    }

    var isFinished: Bool { ended }

    /// Waiting for the link to open, or its unsent bytes are past the high-water mark.
    var isBacklogged: Bool { !ended && !onRelay && link.isBacklogged }

    func deliver(_ message: RelayMessage) {
        guard !ended else { return }
        let last: Bool
        switch message {
        case .event(_, .done, _), .event(_, .failed, _), .abort: last = true
        default: last = false
        }
        if last { ended = true }
        if onRelay { return fallback(message) }
        // The link's pings say the worker is alive; only the relay needs a stream's keepalives.
        if case .keepalive = message { return }
        if !link.isOpen { unconfirmed?.append(message) }
        link.send(id, message)
        if last { link.forget(id) }
    }

    /// The link opened: what was sent is on its way.
    func confirmed() { unconfirmed = nil }

    /// The link failed before it opened: the stream goes on through the relay, from the start.
    func fallBackToRelay() {
        onRelay = true
        let sent = unconfirmed ?? []
        unconfirmed = nil
        for m in sent { fallback(m) }
    }

    /// The gateway asked to stop it.
    func cancelled() {
        guard !ended else { return }
        ended = true
        onCancel?()
    }

    /// The link closed before the stream ended.
    func lost() {
        guard !ended else { return }
        ended = true
        onGone?()
    }
}

/// The worker's end of one link (its loop only): dial, answer the challenge, check the welcome,
/// then stream. Frames made before the handshake ends wait in `out` (bounded like the socket's).
final class OutboundLink: ConnectionHandler, @unchecked Sendable {
    enum Phase { case connecting, challenged, open, closed }
    let pool: LinkPool
    let address: CompletionWire.LinkAddress
    let loop: EventLoop
    /// Called once when it closes; `opened`: whether the handshake had finished.
    private let onClosed: (OutboundLink, _ opened: Bool) -> Void
    private var phase = Phase.connecting
    private var connection: Connection?
    private var reader = LinkFrameReader()
    /// Small until the peer proved it holds the secret.
    private var maxFrameBytes = LinkFrame.maxHandshakeFrameBytes
    private var nonce: [UInt8] = []
    private var streams: [UInt32: LinkedStream] = [:]
    private var nextID: UInt32 = 0
    /// Frames not written yet: before the handshake ends, or made in this loop turn.
    private var out: [UInt8] = []
    private var flushScheduled = false
    private var scratch = JSONWriter(capacity: 256)
    private var lastHeard: UInt64 = 0
    private var lastSent: UInt64 = 0
    private var timer: TimerHandle?
    var closed: Bool { phase == .closed }
    var isOpen: Bool { phase == .open }
    var isBacklogged: Bool {
        switch phase {
        case .connecting, .challenged: return true
        case .closed: return false
        case .open: return out.count + (connection?.pendingOutboundBytes ?? 0) > pool.configuration.highWaterBytes
        }
    }
    private var everOpened = false

    init(pool: LinkPool, address: CompletionWire.LinkAddress, loop: EventLoop, onClosed: @escaping (OutboundLink, _ opened: Bool) -> Void) {
        self.pool = pool
        self.address = address
        self.loop = loop
        self.onClosed = onClosed
    }

    func stream(key: String, fallback: @escaping (RelayMessage) -> Void) -> LinkedStream {
        nextID &+= 1
        let s = LinkedStream(id: nextID, key: key, link: self, fallback: fallback)
        if phase == .closed {
            // Could not even dial: the relay carries it.
            s.fallBackToRelay()
        } else {
            streams[nextID] = s
        }
        return s
    }

    func forget(_ id: UInt32) { streams[id] = nil }

    func dial() {
        lastHeard = loop.now
        do {
            // An IP literal needs no resolver (which would block this loop).
            let target: SocketAddress
            if let literal = try? SocketAddress(host: address.host, port: address.port) { target = literal } else {
                target = try SocketAddress.resolve(host: address.host, port: address.port)
            }
            connection = try Connection.connect(to: target, loop: loop, maxOutboundBytes: pool.configuration.maxOutboundBytes) { [weak self] _, error in
                guard let self, error == nil, self.phase == .connecting else { return }
                self.phase = .challenged
            }
            connection?.handler = self
        } catch {
            pool.logger.warning("stream link: cannot dial gateway", ["gateway": address.gateway, "address": "\(address.host):\(address.port)",
                                                                    "error": "\(error)"])
            close()
            return
        }
        // The handshake must finish in time; after it, the link is watched for silence.
        timer = loop.schedule(afterNanos: pool.configuration.connectNanos) { [weak self] in
            guard let self, self.phase != .open, self.phase != .closed else { return }
            self.pool.logger.warning("stream link: handshake timed out", ["gateway": self.address.gateway])
            self.close()
        }
    }

    // MARK: sending

    func send(_ id: UInt32, _ message: RelayMessage) {
        guard phase != .closed else { return }
        if case .event(_, .delta(let index, let text, nil), _) = message {
            LinkFrame.appendDelta(id: id, index: index, text: text, to: &out)
        } else {
            LinkFrame.appendMessage(id: id, message, to: &out, scratch: &scratch)
        }
        if out.count > pool.configuration.maxOutboundBytes {
            pool.logger.warning("stream link: gateway not reading, closed", ["gateway": address.gateway, "streams": "\(streams.count)"])
            return close(overflowed: true)
        }
        scheduleFlush()
    }

    private func scheduleFlush() {
        guard phase == .open, !flushScheduled else { return }
        flushScheduled = true
        // Same loop iteration, after whatever else is producing now: coalesces, never delays.
        loop.runAfterTick { [self] in flush() }
    }

    private func flush() {
        flushScheduled = false
        guard phase == .open, let connection, !out.isEmpty else { return }
        lastSent = loop.now
        out.withUnsafeBytes { connection.write($0) }
        out.removeAll(keepingCapacity: out.capacity <= 64 * 1024)
        if !connection.isOpen { close() }
    }

    // MARK: receiving

    func connectionRead(_ connection: Connection, _ bytes: UnsafeMutableRawBufferPointer) {
        lastHeard = loop.now
        do {
            try reader.read(UnsafeRawBufferPointer(bytes), maxFrameBytes: { self.maxFrameBytes }) { (kind, payload) throws(LinkFrame.DecodeError) -> Bool in
                self.frame(kind, payload)
                return self.phase != .closed
            }
        } catch {
            pool.logger.warning("stream link: malformed frame from gateway", ["gateway": address.gateway, "reason": error.reason])
            close()
        }
    }

    private func frame(_ kind: UInt8, _ p: UnsafeRawBufferPointer) {
        guard let frame = try? LinkFrame.decode(kind: kind, payload: p) else { return close() }
        switch (phase, frame) {
        case (.challenged, .challenge(let challenge)), (.connecting, .challenge(let challenge)):
            guard nonce.isEmpty else { return close() }
            nonce = pool.auth.random(LinkFrame.nonceBytes)
            let mac = pool.auth.helloMAC(challenge: challenge, worker: pool.nodeID, gateway: address.gateway, nonce: nonce)
            var hello: [UInt8] = []
            LinkFrame.hello(worker: pool.nodeID, gateway: address.gateway, nonce: nonce, mac: mac).append(to: &hello)
            hello.withUnsafeBytes { connection?.write($0) }
            phase = .challenged
        case (.challenged, .welcome(let mac)):
            guard !nonce.isEmpty, pool.auth.isReady(), LinkAuth.equal(mac, pool.auth.welcomeMAC(nonce: nonce, gateway: address.gateway)) else {
                pool.logger.warning("stream link: the gateway does not hold the fleet secret", ["gateway": address.gateway])
                return close()
            }
            phase = .open
            everOpened = true
            for (_, s) in streams { s.confirmed() }
            maxFrameBytes = LinkFrame.maxFrameBytes
            timer?.cancel()
            watch()
            scheduleFlush()
        case (.open, .cancel(let id)):
            streams.removeValue(forKey: id)?.cancelled()
        case (.open, .ping):
            break
        default:
            close()
        }
    }

    private func watch() {
        let c = pool.configuration
        timer = loop.schedule(afterNanos: c.pingNanos / 2) { [weak self] in
            guard let self, self.phase == .open else { return }
            let now = self.loop.now
            if now &- self.lastHeard >= c.silenceNanos {
                self.pool.logger.warning("stream link: gateway silent, closed", ["gateway": self.address.gateway, "streams": "\(self.streams.count)"])
                return self.close()
            }
            if now &- self.lastSent >= c.pingNanos && self.out.isEmpty {
                LinkFrame.ping.append(to: &self.out)
                self.flush()
            }
            self.watch()
        }
    }

    func connectionClosed(_ connection: Connection, error: SystemError?) { close() }

    /// Ends the link. Once it had opened, or when it overflowed, every stream on it stops (the
    /// gateway, gone or cut off, ends them on its side; an overflow is never replayed onto
    /// Redis); if it never opened (unreachable, refused, not answering), they go on through the
    /// relay, and this gateway is not dialled again for a while.
    private func close(overflowed: Bool = false) {
        guard phase != .closed else { return }
        if !everOpened && !overflowed {
            pool.logger.warning("stream link could not be opened: tokens to this gateway go through Redis for now",
                                ["gateway": address.gateway, "address": "\(address.host):\(address.port)"])
        }
        phase = .closed
        timer?.cancel()
        timer = nil
        out = []
        connection?.abort(error: nil)
        connection = nil
        onClosed(self, everOpened)
        let lost = streams
        streams.removeAll()
        for (_, s) in lost {
            if everOpened || overflowed { s.lost() } else { s.fallBackToRelay() }
        }
    }
}
