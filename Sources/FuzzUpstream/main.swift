// libFuzzer target for what the model proxy reads from upstreams: the HTTP/1.1 response parser
// (status, headers, Content-Length / chunked / close-delimited bodies) and the server-sent
// events parser behind it. Invariants on every input: no crash, bounded memory, and the verdict
// (head, body bytes, events, error or not, whether it ended) does not depend on how the bytes are
// split across reads.
import HTTP1
import FuzzSupport

struct Verdict: Equatable {
    var status: Int?
    var body: [UInt8] = []
    var events: [SSEParser.Event] = []
    var ended = false
    var failed = false
    var sseFailed = false
}

func parseAll(_ data: [UInt8], piece: Int) -> Verdict {
    var parser = HTTPResponseParser(maxHeadBytes: 4096, maxHeaderCount: 32)
    var sse = SSEParser(maxEventBytes: 4096)
    var v = Verdict()
    var i = 0
    func onEvent(_ e: HTTPResponseParser.Event) {
        switch e {
        case .head(let h): v.status = h.status
        case .body(let b):
            v.body.append(contentsOf: b)
            if !v.sseFailed {
                do throws(HTTPResponseError) { try sse.feed(b) { v.events.append($0) } } catch { v.sseFailed = true }
            }
        case .end: v.ended = true
        }
    }
    while i < data.count && !v.failed {
        let end = min(data.count, i + piece)
        let chunk = Array(data[i..<end])
        i = end
        let ok: Bool = chunk.withUnsafeBytes { b in
            do throws(HTTPResponseError) { try parser.feed(b, onEvent); return true } catch { return false }
        }
        if !ok { v.failed = true }
    }
    if !v.failed {
        do throws(HTTPResponseError) { try parser.finish(onEvent) } catch { v.failed = true }
    }
    precondition(v.body.count <= data.count)
    return v
}

func fuzzOne(_ data: [UInt8]) {
    guard !data.isEmpty else { return }
    let piece = Int(data[0] % 13) + 1
    let body = Array(data.dropFirst())
    let whole = parseAll(body, piece: max(1, body.count))
    let split = parseAll(body, piece: piece)
    precondition(whole == split, "verdict depends on read boundaries")
}

fuzzMain(fuzzOne)
