import Domain
import FleetCore
import NetCore
import Runtime
import Synchronization

public struct LinkConfiguration: Sendable {
    /// A side that sent nothing for this long sends a ping.
    public var pingNanos: UInt64 = 1_000_000_000
    /// A link that heard nothing for this long is dead (its streams are interrupted).
    public var silenceNanos: UInt64 = 3_000_000_000
    /// How long a new connection has to prove it holds the secret.
    public var handshakeNanos: UInt64 = 2_000_000_000
    /// Bytes a link may hold unsent; past this the peer is too slow and the link closes.
    public var maxOutboundBytes = 8 << 20
    public init() {}
}

/// The gateway's end of the stream links: workers dial it (the fleet port), prove they hold the
/// fleet's secret, and stream their jobs' events on it; each stream's first message names its key
/// and binds the worker's stream id to the gateway's `FleetStream`. Cancels go back down the same
/// link. A link that closes or goes silent interrupts every stream on it at once.
public final class LinkServer: @unchecked Sendable {
    let hub: FleetCompletions
    let auth: LinkAuth
    let configuration: LinkConfiguration
    let logger: Logger
    let linksOpen = Atomic<Int>(0)
    let linksRefused = Atomic<Int>(0)

    public init(hub: FleetCompletions, auth: LinkAuth, configuration: LinkConfiguration = LinkConfiguration(), logger: Logger) {
        self.hub = hub
        self.auth = auth
        self.configuration = configuration
        self.logger = logger
    }

    /// Authenticated links now.
    public var openLinks: Int { linksOpen.load(ordering: .relaxed) }
    /// Connections refused (bad secret, wrong gateway, malformed, too slow to say hello).
    public var refusedLinks: Int { linksRefused.load(ordering: .relaxed) }

    /// A new connection on the fleet port (its loop).
    public func accept(_ connection: Connection) {
        connection.maxOutboundBytes = configuration.maxOutboundBytes
        let link = InboundLink(server: self, connection: connection)
        connection.handler = link
        link.begin()
    }
}

/// What a stream needs of the link its worker streams on.
struct StreamLinkHandle: Sendable {
    /// Tells the worker to stop the stream (any thread).
    let cancel: @Sendable () -> Void
}

/// One worker's link, on its connection's loop.
final class InboundLink: ConnectionHandler, @unchecked Sendable {
    let server: LinkServer
    let connection: Connection
    let loop: EventLoop
    private var reader = LinkFrameReader()
    /// Small until the peer proved it holds the secret.
    private var maxFrameBytes = LinkFrame.maxHandshakeFrameBytes
    private var challenge: [UInt8] = []
    private var worker: String?
    private var streams: [UInt32: FleetStream] = [:]
    private var lastHeard: UInt64 = 0
    private var lastSent: UInt64 = 0
    private var timer: TimerHandle?
    private var out: [UInt8] = []
    private var closed = false

    init(server: LinkServer, connection: Connection) {
        self.server = server
        self.connection = connection
        loop = connection.loop
    }

    func begin() {
        challenge = server.auth.random(LinkFrame.nonceBytes)
        lastHeard = loop.now
        send(.challenge(nonce: challenge))
        timer = loop.schedule(afterNanos: server.configuration.handshakeNanos) { [weak self] in
            guard let self, self.worker == nil else { return }
            self.refuse("no hello in time")
        }
    }

    private func send(_ frame: LinkFrame) {
        out.removeAll(keepingCapacity: true)
        frame.append(to: &out)
        write()
    }

    private func write() {
        lastSent = loop.now
        out.withUnsafeBytes { connection.write($0) }
    }

    private func refuse(_ why: String) {
        server.linksRefused.add(1, ordering: .relaxed)
        server.logger.warning("stream link refused", ["peer_worker": worker ?? "-", "reason": why])
        connection.abort(error: nil)
    }

    func connectionRead(_ connection: Connection, _ bytes: UnsafeMutableRawBufferPointer) {
        lastHeard = loop.now
        do {
            try reader.read(UnsafeRawBufferPointer(bytes), maxFrameBytes: { self.maxFrameBytes }) { (kind, payload) throws(LinkFrame.DecodeError) -> Bool in
                self.frame(kind, payload)
                return !self.closed
            }
        } catch {
            if worker == nil { return refuse("malformed: \(error.reason)") }
            server.logger.warning("stream link closed: malformed frame", ["worker": worker ?? "-", "reason": error.reason])
            connection.abort(error: nil)
        }
    }

    private func frame(_ kind: UInt8, _ p: UnsafeRawBufferPointer) {
        guard let worker else { return handshake(kind, p) }
        switch kind {
        case LinkFrame.Kind.delta.rawValue:
            // The hot path: read in place, no frame value.
            guard p.count >= 8 else { return connection.abort(error: nil) }
            let id = LinkFrame.u32(p, 0)
            guard let stream = streams[id] else { return }
            let text = String(decoding: UnsafeRawBufferPointer(rebasing: p[8...]), as: UTF8.self)
            stream.deliver(.event(requestID: stream.key, .delta(index: Int(LinkFrame.u32(p, 4)), text: text), worker: nil), fromLane: 0)
        case LinkFrame.Kind.message.rawValue:
            guard p.count >= 4, let m = try? RelayMessage.decode(Array(p[4...])) else {
                server.logger.warning("stream link closed: unreadable message", ["worker": worker])
                return connection.abort(error: nil)
            }
            received(LinkFrame.u32(p, 0), m)
        case LinkFrame.Kind.ping.rawValue:
            break
        default:
            server.logger.warning("stream link closed: unexpected frame", ["worker": worker, "type": "\(kind)"])
            connection.abort(error: nil)
        }
    }

    private func handshake(_ kind: UInt8, _ p: UnsafeRawBufferPointer) {
        guard case .hello(let w, let gateway, let nonce, let mac)? = try? LinkFrame.decode(kind: kind, payload: p) else {
            return refuse("expected a hello")
        }
        guard server.auth.isReady() else { return refuse("the fleet secret is not known yet") }
        guard gateway == server.hub.nodeID else { return refuse("meant for gateway \(gateway.prefix(64))") }
        let expected = server.auth.helloMAC(challenge: challenge, worker: w, gateway: gateway, nonce: nonce)
        guard LinkAuth.equal(mac, expected) else { return refuse("wrong secret") }
        worker = w
        maxFrameBytes = LinkFrame.maxFrameBytes
        server.linksOpen.add(1, ordering: .relaxed)
        send(.welcome(mac: server.auth.welcomeMAC(nonce: nonce, gateway: gateway)))
        server.logger.info("stream link open", ["worker": w])
        timer?.cancel()
        watch()
    }

    /// Pings when quiet; closes when the worker has been silent too long.
    private func watch() {
        let c = server.configuration
        timer = loop.schedule(afterNanos: c.pingNanos / 2) { [weak self] in
            guard let self, !self.closed else { return }
            let now = self.loop.now
            if now &- self.lastHeard >= c.silenceNanos {
                self.server.logger.warning("stream link silent: closed", ["worker": self.worker ?? "-", "streams": "\(self.streams.count)"])
                return self.connection.abort(error: nil)
            }
            if now &- self.lastSent >= c.pingNanos { self.send(.ping) }
            self.watch()
        }
    }

    private func received(_ id: UInt32, _ m: RelayMessage) {
        let ends: Bool
        switch m {
        case .event(_, .done, _), .event(_, .failed, _), .abort: ends = true
        case .event, .keepalive: ends = false
        case .cancel, .follow:
            server.logger.warning("stream link closed: unexpected message", ["worker": worker ?? "-"])
            return connection.abort(error: nil)
        }
        if let stream = streams[id] {
            if ends { streams[id] = nil }
            return stream.deliver(m, fromLane: 0)
        }
        // A stream's first message: find it by its key.
        let key: String
        switch m {
        case .event(let k, _, _), .keepalive(let k), .abort(let k): key = k
        default: return
        }
        guard let stream = server.hub.streamForLink(key: key), !stream.isFinished else {
            // Nobody waits for it (ended, forgotten): the worker stops.
            if !ends { cancel(id) }
            return
        }
        if !ends { streams[id] = stream }
        let me = UncheckedBox(self)
        stream.deliverFromLink(m, handle: StreamLinkHandle(cancel: { me.value.cancelFromAnyThread(id) }))
    }

    private func cancelFromAnyThread(_ id: UInt32) {
        if loop.inEventLoop { return cancel(id) }
        let me = UncheckedBox(self)
        loop.execute { me.value.cancel(id) }
    }

    private func cancel(_ id: UInt32) {
        guard !closed else { return }
        streams[id] = nil
        send(.cancel(id: id))
    }

    func connectionClosed(_ connection: Connection, error: SystemError?) {
        guard !closed else { return }
        closed = true
        timer?.cancel()
        timer = nil
        if worker != nil {
            server.linksOpen.subtract(1, ordering: .relaxed)
            server.logger.info("stream link closed", ["worker": worker ?? "-", "streams": "\(streams.count)"])
        }
        let lost = streams
        streams.removeAll()
        for (_, s) in lost { s.linkLost() }
    }
}
