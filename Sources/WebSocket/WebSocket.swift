import HTTP1
import NetCore
import Runtime

/// Receives a WebSocket's messages and its end. Called on the socket's loop.
public protocol WebSocketDelegate: AnyObject {
    /// `data` is valid only during the call.
    func webSocket(_ ws: WebSocket, received opcode: WSOpcode, _ data: UnsafeRawBufferPointer)
    /// The socket is gone (close handshake, failure, timeout or slow reader). Called once.
    func webSocketClosed(_ ws: WebSocket, code: UInt16?)
}

public struct WebSocketConfiguration: Sendable {
    public var maxMessageBytes = 1 << 20
    /// Outbound bytes a reader may leave unread before it is disconnected.
    public var maxOutboundBytes = 1 << 20
    /// A ping goes out after this much silence; 0 turns keepalive off.
    public var pingIntervalNanos: UInt64 = 30_000_000_000
    /// Time for the peer to show life (pong or any frame) after our ping.
    public var pongTimeoutNanos: UInt64 = 10_000_000_000
    /// From the first byte of a message (however fragmented) to its last: a peer dripping a message
    /// would otherwise hold its buffer forever while pings keep the socket alive.
    public var messageTimeoutNanos: UInt64 = 10_000_000_000
    /// Time for the peer to answer our close frame before the socket is dropped.
    public var closeTimeoutNanos: UInt64 = 5_000_000_000
    public var origins = OriginPolicy()
    public init() {}
}

/// One WebSocket over a `Connection`: the parser and state machine plus the I/O they ask for.
/// Loop-confined.
public final class WebSocket: ConnectionHandler {
    public enum Role: Sendable { case server, client }

    public let connection: Connection
    public let role: Role
    /// Held strongly until the socket closes, then released (breaks the delegate ↔ socket cycle).
    public var delegate: WebSocketDelegate?
    /// Owner's per-socket state (the gateway keeps its session here).
    public var context: AnyObject?
    private let config: WebSocketConfiguration
    private var parser: WSFrameParser
    private var machine: WSConnectionStateMachine
    private var timer: TimerHandle?
    private var lastHeard: UInt64
    private var pingSentAt: UInt64?
    private var closeSentAt: UInt64?
    /// When the message being received started, while one is incomplete.
    private var messageStartedAt: UInt64?
    private var closedNotified = false
    private var maskState: UInt64

    public init(connection: Connection, role: Role, configuration: WebSocketConfiguration) {
        self.connection = connection
        self.role = role
        self.config = configuration
        parser = WSFrameParser(expectMasked: role == .server)
        machine = WSConnectionStateMachine(maxMessageBytes: configuration.maxMessageBytes)
        lastHeard = connection.loop.now
        maskState = UInt64(UInt(bitPattern: ObjectIdentifier(connection).hashValue)) ^ monotonicNanos() | 1
        connection.maxOutboundBytes = configuration.maxOutboundBytes
    }

    public var isOpen: Bool { connection.isOpen && machine.state == .open }
    public var loop: EventLoop { connection.loop }

    /// Call once the handler is installed; processes bytes that came with the handshake.
    public func start(leftover: [UInt8] = []) {
        connection.handler = self
        armTimer()
        if !leftover.isEmpty {
            var copy = leftover
            copy.withUnsafeMutableBytes { connectionRead(connection, $0) }
            connection.flush()
        }
    }

    // MARK: sending

    public func send(text: String) {
        var s = text
        s.withUTF8 { send(.text, UnsafeRawBufferPointer($0)) }
    }

    public func send(_ opcode: WSOpcode, _ payload: UnsafeRawBufferPointer) {
        guard machine.state == .open || opcode == .close else { return }
        writeFrame(opcode, payload)
    }

    public func send(_ opcode: WSOpcode, _ payload: [UInt8]) {
        payload.withUnsafeBytes { send(opcode, $0) }
    }

    private func writeFrame(_ opcode: WSOpcode, _ payload: UnsafeRawBufferPointer) {
        guard connection.isOpen else { return }
        // Encoded into the loop's scratch buffer: no allocation per frame.
        let key: UInt32? = role == .client ? nextMaskKey() : nil
        connection.loop.withScratch { out in
            WSFrameEncoder.append(opcode: opcode, payload: payload, maskKey: key, to: &out)
            connection.write(out)
        }
    }

    /// Starts the close handshake (§7.1.2).
    public func close(code: UInt16 = WSCloseCode.normal, reason: String = "") {
        guard machine.state == .open, connection.isOpen else { return }
        WSFrameEncoder.closePayload(code: code, reason: reason).withUnsafeBytes { writeFrame(.close, $0) }
        machine.markCloseSent()
        closeSentAt = connection.loop.now
        if role == .server { rearmSoon(config.closeTimeoutNanos) }
    }

    private func nextMaskKey() -> UInt32 {
        maskState ^= maskState << 13
        maskState ^= maskState >> 7
        maskState ^= maskState << 17
        return UInt32(truncatingIfNeeded: maskState)
    }

    // MARK: reading

    public func connectionRead(_ c: Connection, _ bytes: UnsafeMutableRawBufferPointer) {
        lastHeard = c.loop.now
        pingSentAt = nil
        let err = parser.feed(bytes) { event in
            if let action = machine.handle(event) { perform(action) }
            return connection.isOpen && machine.state != .closed
        }
        if let err { failConnection(err); return }
        if parser.isMidFrame || machine.isAssemblingMessage {
            if messageStartedAt == nil {
                messageStartedAt = c.loop.now
                if connection.isOpen && machine.state == .open { armTimer() }
            }
        } else {
            messageStartedAt = nil
        }
    }

    private func perform(_ action: WSConnectionStateMachine.Action) {
        switch action {
        case .message(let op, let data):
            delegate?.webSocket(self, received: op, data)
        case .assembledMessage(let op, let data):
            data.withUnsafeBytes { delegate?.webSocket(self, received: op, $0) }
        case .sendPong(let payload):
            payload.withUnsafeBytes { writeFrame(.pong, $0) }
        case .pongReceived:
            break
        case .replyCloseAndShutdown(let code):
            WSFrameEncoder.closePayload(code: code ?? WSCloseCode.normal, reason: "").withUnsafeBytes {
                if code == nil { writeFrame(.close, UnsafeRawBufferPointer(start: nil, count: 0)) } else { writeFrame(.close, $0) }
            }
            finish(code: code)
        case .closeHandshakeComplete(let code):
            finish(code: code)
        case .fail(let e):
            failConnection(e)
        }
    }

    private func failConnection(_ e: WSProtocolError) {
        machine.markClosed()
        WSFrameEncoder.closePayload(code: e.code, reason: e.reason).withUnsafeBytes { writeFrame(.close, $0) }
        finish(code: e.code)
    }

    /// Ends the TCP connection after queued frames are written (the server closes first, §7.1.1).
    private func finish(code: UInt16?) {
        machine.markClosed()
        notifyClosed(code: code)
        connection.close()
    }

    private func notifyClosed(code: UInt16?) {
        guard !closedNotified else { return }
        closedNotified = true
        timer?.cancel()
        timer = nil
        let d = delegate
        delegate = nil
        d?.webSocketClosed(self, code: code)
        context = nil
    }

    public func connectionClosed(_ c: Connection, error: SystemError?) {
        machine.markClosed()
        notifyClosed(code: error == nil ? 1006 : 1006)
    }

    // MARK: keepalive

    private func armTimer() {
        guard config.pingIntervalNanos > 0 || closeSentAt != nil || messageStartedAt != nil else { return }
        timer?.cancel()
        timer = connection.loop.schedule(atNanos: nextDeadline()) { [weak self] in self?.timerFired() }
    }

    private func rearmSoon(_ delay: UInt64) {
        timer?.cancel()
        timer = connection.loop.schedule(afterNanos: delay) { [weak self] in self?.timerFired() }
    }

    private func nextDeadline() -> UInt64 {
        if let c = closeSentAt { return c &+ config.closeTimeoutNanos }
        var deadline = UInt64.max
        if let p = pingSentAt { deadline = p &+ config.pongTimeoutNanos } else if config.pingIntervalNanos > 0 {
            deadline = lastHeard &+ config.pingIntervalNanos
        }
        if let m = messageStartedAt { deadline = min(deadline, m &+ config.messageTimeoutNanos) }
        return deadline
    }

    private func timerFired() {
        timer = nil
        guard connection.isOpen else { return }
        let now = monotonicNanos()
        if let c = closeSentAt, now >= c &+ config.closeTimeoutNanos {
            // The peer never answered our close.
            notifyClosed(code: 1006)
            connection.abort(error: nil)
            return
        }
        if let m = messageStartedAt, now >= m &+ config.messageTimeoutNanos {
            messageStartedAt = nil
            failConnection(WSProtocolError(WSCloseCode.policyViolation, "message not completed in time"))
            return
        }
        if let p = pingSentAt, now >= p &+ config.pongTimeoutNanos {
            notifyClosed(code: 1006)
            connection.abort(error: nil)
            return
        }
        if config.pingIntervalNanos > 0, pingSentAt == nil, closeSentAt == nil, now >= lastHeard &+ config.pingIntervalNanos {
            pingSentAt = now
            writeFrame(.ping, UnsafeRawBufferPointer(start: nil, count: 0))
        }
        armTimer()
    }
}

extension EventLoop {
    /// Lends the loop's scratch byte array (emptied) to `body`. Loop thread only; not re-entrant.
    public func withScratch<R>(_ body: (inout [UInt8]) -> R) -> R {
        let scratch = LoopScratch.forLoop(self)
        scratch.bytes.removeAll(keepingCapacity: true)
        let r = body(&scratch.bytes)
        if scratch.bytes.capacity > 256 * 1024 { scratch.bytes = [] }
        return r
    }
}

/// Per-loop scratch storage, found by the loop's identity.
final class LoopScratch {
    var bytes: [UInt8] = []

    static func forLoop(_ loop: EventLoop) -> LoopScratch {
        if let s = loop.scratchSlot as? LoopScratch { return s }
        let s = LoopScratch()
        s.bytes.reserveCapacity(4096)
        loop.scratchSlot = s
        return s
    }
}
