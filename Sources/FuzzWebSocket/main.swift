// libFuzzer target for the WebSocket frame parser and connection state machine (server role).
// Invariants: no crash, and the actions taken do not depend on how the bytes are split.
import WebSocket
import FuzzSupport

enum Act: Equatable {
    case message(UInt8, [UInt8])
    case pong([UInt8])
    case pongReceived
    case close(UInt16?)
    case fail(UInt16)
}

func run(_ data: [UInt8], piece: Int) -> [Act] {
    var parser = WSFrameParser(expectMasked: true)
    var machine = WSConnectionStateMachine(maxMessageBytes: 8192)
    var acts: [Act] = []
    var bytes = data
    var i = 0
    var stopped = false
    while i < bytes.count && !stopped {
        let end = min(bytes.count, i + piece)
        let err = bytes.withUnsafeMutableBytes { p in
            parser.feed(UnsafeMutableRawBufferPointer(rebasing: p[i..<end])) { e in
                guard let a = machine.handle(e) else { return true }
                switch a {
                case .message(let op, let d):
                    if op == .text { precondition(UTF8Validator.isValid(d)) }
                    acts.append(.message(op.rawValue, Array(d)))
                case .assembledMessage(let op, let d):
                    if op == .text { precondition(UTF8Validator.isValid(d)) }
                    acts.append(.message(op.rawValue, d))
                case .sendPong(let d): precondition(d.count <= 125); acts.append(.pong(d))
                case .pongReceived: acts.append(.pongReceived)
                case .replyCloseAndShutdown(let c), .closeHandshakeComplete(let c): acts.append(.close(c)); stopped = true; return false
                case .fail(let e): acts.append(.fail(e.code)); stopped = true; return false
                }
                return true
            }
        }
        if let err { acts.append(.fail(err.code)); stopped = true }
        i = end
    }
    return acts
}

func fuzzOne(_ data: [UInt8]) {
    guard !data.isEmpty else { return }
    let piece = Int(data[0] % 13) + 1
    let body = Array(data.dropFirst())
    precondition(run(body, piece: max(1, body.count)) == run(body, piece: piece), "actions depend on read boundaries")
}

fuzzMain(fuzzOne)
