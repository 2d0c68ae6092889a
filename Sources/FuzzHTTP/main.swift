// libFuzzer target for the HTTP/1.1 request parser.
// Invariants checked on every input: no crash, no over-consumption, and the verdict (requests
// parsed, bodies, error status) does not depend on how the bytes are split across reads.
import HTTP1
import NetCore
import FuzzSupport

struct Verdict: Equatable {
    var bodies: [[UInt8]] = []
    var targets: [String] = []
    var error: Int?
}

func parseAll(_ data: [UInt8], piece: Int) -> Verdict {
    var parser = HTTPRequestParser(bodyLimit: 4096)
    var buffer = ByteBuffer()
    var v = Verdict()
    var i = 0
    while i < data.count && v.error == nil {
        let end = min(data.count, i + piece)
        buffer.append(Array(data[i..<end]))
        i = end
        loop: while true {
            let before = buffer.readableBytes
            switch parser.next(&buffer) {
            case .failure(let e): v.error = e.status; break loop
            case .success(.needMore): break loop
            case .success(.head(let h)): v.targets.append(h.target)
            case .success(.end(let body)): v.bodies.append(body)
            }
            precondition(buffer.readableBytes <= before)
        }
    }
    return v
}

func fuzzOne(_ data: [UInt8]) {
    guard !data.isEmpty else { return }
    let piece = Int(data[0] % 17) + 1
    let body = Array(data.dropFirst())
    let whole = parseAll(body, piece: max(1, body.count))
    let split = parseAll(body, piece: piece)
    precondition(whole == split, "verdict depends on read boundaries")
}

fuzzMain(fuzzOne)
