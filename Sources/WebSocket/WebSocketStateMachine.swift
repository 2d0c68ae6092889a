/// RFC 6455 message and close rules as a pure state machine: fed parser events, it returns what
/// the I/O shell must do. It knows no sockets, so tests drive it with byte arrays.
public struct WSConnectionStateMachine {
    public enum Action {
        /// A complete single-piece message, still in the caller's read buffer (valid while it is).
        case message(WSOpcode, UnsafeRawBufferPointer)
        /// A complete message assembled from several frames or reads.
        case assembledMessage(WSOpcode, [UInt8])
        case sendPong([UInt8])
        case pongReceived
        /// The peer started the close handshake: answer with this code and close the TCP connection.
        case replyCloseAndShutdown(code: UInt16?)
        /// The peer answered our close: the handshake is done; close the TCP connection.
        case closeHandshakeComplete(code: UInt16?)
        /// Protocol violation: send a close frame with this code, then close the TCP connection.
        case fail(WSProtocolError)
    }

    public enum State: Sendable { case open, closeSent, closed }

    public let maxMessageBytes: Int
    public private(set) var state: State = .open
    private var messageOpcode: WSOpcode?
    /// Some fragments of a message have arrived, not its last.
    public var isAssemblingMessage: Bool { messageOpcode != nil }
    private var message: [UInt8] = []
    private var utf8 = UTF8Validator()
    private var frame: WSFrameHeader?
    private var control: [UInt8] = []
    /// A single-frame message whose payload arrived in one piece is delivered straight from the
    /// read buffer, without a copy.
    private var direct: UnsafeMutableRawBufferPointer?

    public init(maxMessageBytes: Int) { self.maxMessageBytes = maxMessageBytes }

    public mutating func markCloseSent() { if state == .open { state = .closeSent } }
    public mutating func markClosed() { state = .closed }

    /// Returns what to do for one parser event, if anything. The machine is not borrowed while the
    /// caller acts, so the action may call back into the socket (send, close) freely.
    public mutating func handle(_ event: WSParseEvent) -> Action? {
        guard state != .closed else { return nil }
        switch event {
        case .header(let h):
            frame = h
            direct = nil
            if h.opcode.isControl {
                control.removeAll(keepingCapacity: true)
                return nil
            }
            if state == .closeSent { return nil }  // after our close, data is read and dropped (§5.5.1)
            if h.opcode == .continuation {
                guard messageOpcode != nil else { return fail(WSCloseCode.protocolError, "continuation without a message") }
            } else {
                guard messageOpcode == nil else { return fail(WSCloseCode.protocolError, "new message inside a fragmented one") }
                messageOpcode = h.opcode
                utf8.reset()
            }
            // Refuse by the declared length, before buffering any of it.
            if h.length > UInt64(maxMessageBytes - message.count) {
                return fail(WSCloseCode.messageTooBig, "message over \(maxMessageBytes) bytes")
            }
            return nil

        case .payload(let p):
            guard let h = frame else { return nil }
            if h.opcode.isControl {
                control.append(contentsOf: p)
                return nil
            }
            if state == .closeSent { return nil }
            if messageOpcode == .text && !utf8.feed(UnsafeRawBufferPointer(p)) {
                return fail(WSCloseCode.invalidPayload, "invalid UTF-8 in text message")
            }
            if h.fin && h.opcode != .continuation && message.isEmpty && direct == nil && UInt64(p.count) == h.length {
                direct = p
            } else {
                if let d = direct { message.append(contentsOf: d); direct = nil }
                message.append(contentsOf: p)
            }
            return nil

        case .frameEnd:
            guard let h = frame else { return nil }
            frame = nil
            if h.opcode.isControl { return endControl(h.opcode) }
            if state == .closeSent { return nil }
            guard h.fin, let op = messageOpcode else { return nil }
            if op == .text && !utf8.isComplete {
                return fail(WSCloseCode.invalidPayload, "text message ends inside a UTF-8 sequence")
            }
            messageOpcode = nil
            if let d = direct {
                direct = nil
                return .message(op, UnsafeRawBufferPointer(d))
            }
            let m = message
            message = []
            return .assembledMessage(op, m)
        }
    }

    private mutating func endControl(_ op: WSOpcode) -> Action? {
        switch op {
        case .ping:
            return state == .open ? .sendPong(control) : nil
        case .pong:
            return .pongReceived
        case .close:
            var code: UInt16?
            if control.count == 1 { return fail(WSCloseCode.protocolError, "close payload of one byte") }
            if control.count >= 2 {
                let c = UInt16(control[0]) << 8 | UInt16(control[1])
                guard WSCloseCode.isValidOnWire(c) else { return fail(WSCloseCode.protocolError, "invalid close code \(c)") }
                let reasonOK = control.withUnsafeBytes { UTF8Validator.isValid(UnsafeRawBufferPointer(rebasing: $0[2...])) }
                guard reasonOK else { return fail(WSCloseCode.invalidPayload, "close reason is not UTF-8") }
                code = c
            }
            let wasSent = state == .closeSent
            state = .closed
            return wasSent ? .closeHandshakeComplete(code: code) : .replyCloseAndShutdown(code: code)
        default:
            return nil
        }
    }

    private mutating func fail(_ code: UInt16, _ reason: String) -> Action {
        state = .closed
        return .fail(WSProtocolError(code, reason))
    }
}
