import Dispatch
import Foundation
import NetCore
import Runtime
import Synchronization
import WebSocket

/// `playground bench-streams`: one client process of the 100k-stream proof (scripts/bench-100k.py
/// starts several and the fleet they talk to). It opens its share of WebSockets to /v1/ws through
/// the load balancers, keeps most of them idle and streams completions on the rest (one at a time
/// each, the next as soon as one ends), and measures time to first token and the gap between
/// tokens. A socket that closes (a gateway restarting) is opened again through the balancer, and
/// a completion it was streaming is sent again with its request_id: the new gateway attaches to it
/// (or replays it), and tokens already seen are skipped by index. Driven over stdin/stdout:
/// prints `connected <ok> <failed>`, then obeys `go` (start streaming), `mark` (zero the counters),
/// `stats` (print them), `quit`.
public enum BenchStreamsCommand {
    public static let spec = CommandSpec("bench-streams", summary: """
        One client process of the 100k-stream proof (scripts/bench-100k.py runs it): idle WebSockets,
        and streaming ones measuring time to first token and inter-token gaps; reconnects and resumes
        by request_id when a gateway goes away. Controlled over stdin (go, mark, stats, quit).
        """, flags: [
        .option("targets", "HOST:PORT,…", "the load balancers to spread connections over"),
        .option("source", "ADDR", default: "127.0.0.2", "local address to connect from (its own 127.0.0.x: ports are assigned)"),
        .option("idle", "N", default: "1000", "idle connections"),
        .option("active", "N", default: "100", "connections streaming completions, one at a time each"),
        .option("max-tokens", "N", default: "40", "tokens per completion"),
        .option("name", "TEXT", default: "c", "prefix of this process's request_ids"),
    ])

    public static func run(_ a: Arguments) throws -> Int32 {
        ProcessLimits.ignoreSIGPIPE()
        ProcessLimits.raiseOpenFileLimit()
        var targets: [SocketAddress] = []
        for t in (a.optionalString("targets") ?? "").split(separator: ",") {
            let hp = t.split(separator: ":")
            guard hp.count == 2, let port = Int(hp[1]), let addr = try? SocketAddress(host: String(hp[0]), port: port) else {
                throw ArgumentError(message: "--targets: HOST:PORT[,HOST:PORT…], got '\(t)'")
            }
            targets.append(addr)
        }
        guard !targets.isEmpty else { throw ArgumentError(message: "--targets is required") }
        let source = try SocketAddress(host: a.string("source"), port: 0)
        let idle = try a.int("idle"), active = try a.int("active"), maxTokens = try a.int("max-tokens")
        guard idle >= 0, active >= 0, idle + active < 19_000, maxTokens >= 1 else {
            throw ArgumentError(message: "--idle + --active must stay under 19,000 (one process's descriptors); --max-tokens ≥ 1")
        }
        let name = a.string("name")
        let group = try EventLoopGroup(count: 1, namePrefix: "streams")
        group.start()
        let client = StreamsClient(loop: group.loops[0], targets: targets, source: source, idle: idle, active: active,
                                   maxTokens: maxTokens, name: name)
        let box = UncheckedBox(client)
        group.loops[0].execute { box.value.openMore() }
        client.allConnected.wait()
        let opened = Mutex<(Int, Int)>((0, 0))
        let got = DispatchSemaphore(value: 0)
        group.loops[0].execute { opened.withLock { $0 = (box.value.open, box.value.failedConnects) }; got.signal() }
        got.wait()
        printLine("connected \(opened.withLock { $0.0 }) \(opened.withLock { $0.1 })")
        while let line = Swift.readLine() {
            let done = DispatchSemaphore(value: 0)
            let out = Mutex<String?>(nil)
            switch line {
            case "go": group.loops[0].execute { box.value.startStreaming(); done.signal() }
            case "mark": group.loops[0].execute { box.value.mark(); done.signal() }
            case "stats": group.loops[0].execute { out.withLock { $0 = box.value.stats() }; done.signal() }
            case "quit": return 0
            default: done.signal()
            }
            done.wait()
            if let s = out.withLock({ $0 }) { printLine(s) }
        }
        return 0
    }
}

/// One process's sockets, on one loop.
final class StreamsClient: @unchecked Sendable {
    let loop: EventLoop
    let targets: [SocketAddress]
    let source: SocketAddress
    let idleWanted: Int
    let activeWanted: Int
    let maxTokens: Int
    let name: String
    let allConnected = DispatchSemaphore(value: 0)
    var signalled = false
    var nextPort = 20_000
    var nextTarget = 0
    var inFlightConnects = 0
    var toOpen: [StreamConn] = []
    var conns: [StreamConn] = []
    var streaming = false
    var sequence = 0

    // Counters since the last `mark`.
    var open = 0
    var failedConnects = 0
    var completions = 0
    var tokens = 0
    var reconnects = 0
    var resumed = 0
    var retried = 0
    var errors: [String: Int] = [:]
    var ttft = RTTHistogram()
    var gaps = RTTHistogram()
    var resumeGaps = RTTHistogram()

    init(loop: EventLoop, targets: [SocketAddress], source: SocketAddress, idle: Int, active: Int, maxTokens: Int, name: String) {
        self.loop = loop
        self.targets = targets
        self.source = source
        idleWanted = idle
        activeWanted = active
        self.maxTokens = maxTokens
        self.name = name
        for i in 0..<(idle + active) {
            let c = StreamConn(client: self, active: i >= idle, number: i)
            conns.append(c)
            toOpen.append(c)
        }
        toOpen.reverse()
    }

    /// At most 128 handshakes in flight: the balancers' and gateways' accept queues never overflow.
    func openMore() {
        while inFlightConnects < 128, let c = toOpen.popLast() {
            inFlightConnects += 1
            var cfg = WebSocketConfiguration()
            cfg.pingIntervalNanos = 0
            cfg.maxOutboundBytes = 1 << 20
            cfg.maxMessageBytes = 1 << 20
            let from = (try? SocketAddress(host: source.host, port: nextPort)) ?? source
            nextPort = nextPort >= 65_000 ? 20_000 : nextPort + 1
            let target = targets[nextTarget % targets.count]
            nextTarget += 1
            WebSocketClient.connect(to: target, from: from, path: "/v1/ws", configuration: cfg, loop: loop) { [self] r in
                inFlightConnects -= 1
                switch r {
                case .success(let ws): c.connected(ws)
                case .failure:
                    failedConnects += 1
                    // Tried again a moment later (a balancer between health checks, a full backlog).
                    _ = loop.schedule(afterNanos: 200_000_000) { [self] in
                        toOpen.append(c)
                        openMore()
                    }
                }
                if !signalled && open + failedConnects >= conns.count {
                    signalled = true
                    allConnected.signal()
                }
                openMore()
            }
        }
    }

    func reopen(_ c: StreamConn) {
        reconnects += 1
        open -= 1
        toOpen.append(c)
        openMore()
    }

    func startStreaming() {
        streaming = true
        for c in conns where c.active { c.startNext() }
    }

    func nextRequestID() -> String {
        sequence += 1
        return "\(name)-\(sequence)"
    }

    func mark() {
        completions = 0; tokens = 0; reconnects = 0; resumed = 0; retried = 0; errors = [:]; failedConnects = 0
        ttft = RTTHistogram(); gaps = RTTHistogram(); resumeGaps = RTTHistogram()
    }

    func stats() -> String {
        let errs = errors.isEmpty ? "-" : errors.map { "\($0.key)=\($0.value)" }.sorted().joined(separator: ",")
        return "stats \(open) \(completions) \(tokens) \(reconnects) \(resumed) \(retried) \(errs) \(ttft.sparse) \(gaps.sparse) \(resumeGaps.sparse)"
    }
}

/// One socket: idle, or streaming one completion after another.
final class StreamConn: WebSocketDelegate {
    unowned let client: StreamsClient
    let active: Bool
    let number: Int
    var ws: WebSocket?
    var requestID: String?
    var nextIndex = 0
    var sentAt: UInt64 = 0
    var lastTokenAt: UInt64 = 0
    var resuming = false
    var retrying = false

    init(client: StreamsClient, active: Bool, number: Int) {
        self.client = client
        self.active = active
        self.number = number
    }

    func connected(_ ws: WebSocket) {
        self.ws = ws
        ws.delegate = self
        client.open += 1
        guard active, client.streaming else { return }
        if requestID != nil && retrying {
            // Refused by a gateway that is draining: the same request again, elsewhere (its time
            // to first token counts from the first attempt).
            retrying = false
            client.retried += 1
            send()
        } else if requestID != nil {
            // The socket closed mid-stream: the same request_id again, on whatever gateway now.
            resuming = nextIndex > 0
            client.resumed += 1
            send()
        } else {
            startNext()
        }
    }

    func startNext() {
        requestID = client.nextRequestID()
        nextIndex = 0
        resuming = false
        sentAt = monotonicNanos()
        send()
    }

    private func send() {
        guard let ws, let id = requestID else { return }
        ws.send(text: #"{"id":1,"method":"POST","path":"/v1/completions","body":{"prompt":"The sea was calm in the morning, and","max_tokens":"#
                + "\(client.maxTokens)" + #","temperature":0.9,"request_id":""# + id + #""}}"#)
    }

    func webSocket(_ ws: WebSocket, received opcode: WSOpcode, _ data: UnsafeRawBufferPointer) {
        // The server writes its fields in a fixed order: {"id":1,"type":"…", …}. Read only what is needed.
        guard let type = Self.field(data, "\"type\":\"") else { return }
        let now = monotonicNanos()
        switch type {
        case "delta":
            guard let index = Self.number(data, "\"index\":") else { return }
            guard index == nextIndex else { return }  // a token seen before the socket closed
            if index == 0 && !resuming {
                client.ttft.record(micros: Int((now &- sentAt) / 1000))
            } else if index > 0 {
                if resuming { client.resumeGaps.record(micros: Int((now &- lastTokenAt) / 1000)) } else { client.gaps.record(micros: Int((now &- lastTokenAt) / 1000)) }
            }
            resuming = false
            nextIndex += 1
            lastTokenAt = now
            client.tokens += 1
        case "done":
            client.completions += 1
            requestID = nil
            if client.streaming { startNext() }
        case "error":
            let code = Self.field(data, "\"code\":\"") ?? "unknown"
            if code == "server_busy" && nextIndex == 0 {
                // Refused before it started (a gateway draining): retried on another gateway
                // through the balancer, as the error's retry hint says.
                retrying = true
            } else {
                client.errors[code, default: 0] += 1
                requestID = nil
            }
            ws.close(code: 1000, reason: "retry elsewhere")
        default:
            break  // accepted
        }
    }

    func webSocketClosed(_ ws: WebSocket, code: UInt16?) {
        guard self.ws === ws else { return }
        self.ws = nil
        client.reopen(self)
    }

    /// The string value after `key` (up to the next quote).
    static func field(_ d: UnsafeRawBufferPointer, _ key: StaticString) -> String? {
        guard let at = find(d, key) else { return nil }
        var end = at
        while end < d.count && d[end] != UInt8(ascii: "\"") { end += 1 }
        return String(decoding: UnsafeRawBufferPointer(rebasing: d[at..<end]), as: UTF8.self)
    }

    static func number(_ d: UnsafeRawBufferPointer, _ key: StaticString) -> Int? {
        guard var at = find(d, key) else { return nil }
        var n = 0, digits = 0
        while at < d.count, d[at] >= 48, d[at] <= 57 { n = n * 10 + Int(d[at] - 48); at += 1; digits += 1 }
        return digits > 0 ? n : nil
    }

    /// Where `key` ends in `d`, searching the first 64 bytes (the fields come first).
    static func find(_ d: UnsafeRawBufferPointer, _ key: StaticString) -> Int? {
        let k = UnsafeRawBufferPointer(start: key.utf8Start, count: key.utf8CodeUnitCount)
        let limit = min(d.count, 96) - k.count
        guard limit >= 0 else { return nil }
        var i = 0
        outer: while i <= limit {
            for j in 0..<k.count where d[i + j] != k[j] { i += 1; continue outer }
            return i + k.count
        }
        return nil
    }
}
