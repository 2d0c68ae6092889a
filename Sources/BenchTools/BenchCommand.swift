import Dispatch
import Foundation
import HTTP1
import NetCore
import Runtime
import Synchronization
import WebSocket

/// `playground bench`: completions end to end against a node whose built-in model runs at zero
/// pace, so every millisecond measured is the gateway's own overhead. Phases:
///   1. WebSocket, open loop at a fixed rate (default 1,000 completions/s): added TTFT percentiles;
///   2. WebSocket, closed loop with a window per connection: the most completions/s;
///   3. SSE (REST `stream: true`) over keep-alive connections: completions/s and TTFT.
/// Client processes are this binary in `--child` mode, each on its own loop.
public enum BenchCommand {
    static let prompt = "The train left the city"

    public static let spec = CommandSpec("bench", summary: """
        Completions end to end against a node it starts with the built-in model at zero pace: WebSocket at a
        fixed rate (added TTFT), WebSocket flat out, and SSE. Prints one line of figures per phase.
        """, flags: [
        .option("port", "N", default: "18950", "port of the node it starts"),
        .option("rate", "N", default: "1000", "completions/s in the open-loop phase"),
        .option("duration", "S", default: "8", "seconds per phase"),
        .option("max-tokens", "N", default: "16", "tokens per completion"),
        .option("connections", "N", default: "64", "client connections"),
        .option("window", "N", default: "8", "completions in flight per connection (closed loop)"),
        .option("clients", "N", default: "1", "client processes"),
        .option("phases", "LIST", default: "rate,max,sse", "which phases, in order"),
        .option("paths", "LIST", default: "local", "local: one serve node on its own; serve-redis: one serve node through Redis; fleet: a gateway and a worker process through Redis (both need REDIS_URL); several in one run: local,fleet"),
        .toggle("high-limits", "admission on at limits no client reaches (one user: 10^9 requests/min, 10^6 at once) instead of off"),
        .option("server-binary", "PATH", default: "", "run the nodes from this playground binary (a baseline build) instead of this one"),
        .option("server-loops", "N", default: "\(CPU.count)", "the node's event loops"),
        .toggle("with-auth", "authenticate every request against PostgreSQL (needs DATABASE_URL)"),
        .toggle("child", "internal: run as a client process"),
        .option("mode", "MODE", default: "ws-max", "internal (child): ws-rate, ws-max or sse"),
        .option("source", "ADDR", default: "127.0.0.2", "internal (child): source address"),
        .option("key", "KEY", default: "", "internal (child): API key"),
    ])

    public static func run(_ a: Arguments) throws -> Int32 {
        if a.bool("child") { return try BenchCompletionChild.run(a) }
        ProcessLimits.ignoreSIGPIPE()
        let port = try a.int("port")
        let rate = try a.int("rate")
        let duration = try a.double("duration")
        let maxTokens = try a.int("max-tokens")
        let connections = try a.int("connections")
        let window = try a.int("window")
        let clients = try a.int("clients")
        let phases = a.string("phases").split(separator: ",").map(String.init)
        let serverLoops = try a.int("server-loops")
        // --with-auth: the real path, one PostgreSQL key lookup per request (needs DATABASE_URL).
        let withAuth = a.bool("with-auth")
        var key = ""
        if withAuth {
            guard Arguments.environment("DATABASE_URL") != nil else { throw ArgumentError(message: "--with-auth needs DATABASE_URL") }
            let mint = try BenchSupport.spawn(["admin", "keys", "create", "--user", "bench"], quiet: true)
            key = BenchSupport.readLine(mint.output) ?? ""
            mint.process.waitUntilExit()
            guard key.hasPrefix("pgk_") else { throw ArgumentError(message: "could not mint a key (run `playground migrate` first?)") }
        }

        let paths = a.string("paths").split(separator: ",").map(String.init)
        for path in paths where !["local", "serve-redis", "fleet"].contains(path) {
            throw ArgumentError(message: "--paths: unknown path '\(path)' (local, serve-redis, fleet)")
        }
        if paths.contains(where: { $0 != "local" }) && Arguments.environment("REDIS_URL") == nil {
            throw ArgumentError(message: "--paths serve-redis and fleet need REDIS_URL")
        }
        let binary = a.string("server-binary")
        if !binary.isEmpty {
            guard access(binary, X_OK) == 0 else { throw ArgumentError(message: "--server-binary: '\(binary)' is not an executable") }
            BenchSupport.serverBinary = binary
        }
        let limits = a.bool("high-limits") ? ["--rate-limit-rpm", "1000000000", "--max-concurrent", "1000000"]
                                           : ["--rate-limit-rpm", "0", "--max-concurrent", "0"]
        var failed = false
        for path in paths {
            if try !runPhases(path: path, port: port, serverLoops: serverLoops, withAuth: withAuth, key: key, limits: limits, phases: phases, rate: rate,
                              duration: duration, maxTokens: maxTokens, connections: connections, window: window, clients: clients) {
                failed = true
            }
        }
        return failed ? 1 : 0
    }

    /// Starts the servers of one path and runs every phase against them; false if any failed.
    static func runPhases(path: String, port: Int, serverLoops: Int, withAuth: Bool, key: String, limits: [String], phases: [String], rate: Int,
                          duration: Double, maxTokens: Int, connections: Int, window: Int, clients: Int) throws -> Bool {
        let common = ["--loops", "\(serverLoops)", "--model-ttft-ms", "0", "--model-token-ms", "0", "--slots", "100000",
                      "--max-queue", "100000", "--log-level", "warning"] + limits
        // local: one process, no Redis at all. serve-redis: one process whose admission and jobs go
        // through Redis. fleet: a worker, then a gateway, meeting only in Redis.
        var servers: [BenchSupport.Child] = []
        defer { for s in servers.reversed() { s.process.terminate(); s.process.waitUntilExit() } }
        if path == "local" || path == "serve-redis" {
            let fleet = ["--fleet", "bench-\(getpid())"]
            servers.append(try BenchSupport.spawn(["serve", "--port", "\(port)"] + common + (path == "local" ? [] : fleet)
                                                  + (withAuth ? [] : ["--auth", "off"]),
                                                  environment: path == "local" ? ["REDIS_URL": nil] : [:]))
        } else {
            let fleet = "bench-\(getpid())"
            servers.append(try BenchSupport.spawn(["worker", "--port", "\(port + 1)", "--fleet", fleet] + common))
            guard BenchSupport.readLine(servers[0].output)?.hasPrefix("listening on") == true else {
                printLine("bench: the worker did not start")
                return false
            }
            servers.append(try BenchSupport.spawn(["gateway", "--port", "\(port)", "--fleet", fleet] + common + (withAuth ? [] : ["--auth", "off"])))
        }
        guard BenchSupport.readLine(servers.last!.output)?.hasPrefix("listening on") == true else {
            printLine("bench: the node did not start")
            return false
        }
        let pids = servers.map { $0.process.processIdentifier }
        usleep(200_000)
        printLine("bench [\(path)]: \(path == "local" ? "one node" : path == "serve-redis" ? "one node through Redis" : "a gateway and a worker through Redis") (pids \(pids.map(String.init).joined(separator: ","))), "
                  + "\(serverLoops) loops each, built-in model at zero pace, max_tokens \(maxTokens), prompt \"\(prompt)\"; "
                  + "\(clients) client process(es); auth \(withAuth ? "on (PostgreSQL lookup per request)" : "off")")
        let rssAll = { pids.reduce(0.0) { $0 + Double(ProcessLimits.residentBytes(pid: $1)) / 1e6 } }
        printLine("bench [\(path)]: server RSS at start \(String(format: "%.1f", rssAll())) MB")
        var failed = false
        for phase in phases {
            let mode: String, conns: Int, win: Int, r: Int
            switch phase {
            case "rate": (mode, conns, win, r) = ("ws-rate", min(connections, 32), 0, rate)
            case "max": (mode, conns, win, r) = ("ws-max", connections, window, 0)
            case "sse": (mode, conns, win, r) = ("sse", connections, 1, 0)
            default: printLine("bench: unknown phase \(phase)"); return false
            }
            let cpuAll = { pids.reduce(0.0) { $0 + BenchSupport.cpuSeconds($1) } }
            let cpu0 = cpuAll()
            var children: [(Process, FileHandle)] = []
            for i in 0..<clients {
                let c = try BenchSupport.spawn(["bench", "--child", "--mode", mode, "--port", "\(port)",
                                                "--connections", "\(BenchWSCommand.share(conns, i, clients))", "--window", "\(win)",
                                                "--rate", "\(BenchWSCommand.share(r, i, clients))", "--duration", "\(duration)",
                                                "--max-tokens", "\(maxTokens)", "--source", "127.0.0.\(2 + i)", "--key", key])
                children.append((c.process, c.output))
            }
            var total = BenchResult()
            for (p, o) in children {
                guard let line = BenchSupport.readLine(o), let r = BenchResult(line: line) else {
                    printLine("bench: a client process gave no result")
                    failed = true
                    continue
                }
                total.merge(r)
                p.waitUntilExit()
            }
            let cpu = cpuAll() - cpu0
            let rss = rssAll()
            let secs = max(total.seconds, 0.001)
            printLine(String(format: "[\(path)] %@: %.0f completions/s, %.0f tokens/s (%.1f tokens each), %d errors; TTFT p50 %.3f ms, p99 %.3f ms, p999 %.3f ms; "
                             + "whole completion p50 %.3f ms, p99 %.3f ms; server CPU %.2f core-s, RSS %.1f MB",
                             phase == "rate" ? "ws open loop at \(rate)/s" : (phase == "max" ? "ws closed loop (\(connections) conns × \(window))" : "sse (\(connections) keep-alive conns)"),
                             Double(total.completions) / secs, Double(total.tokens) / secs,
                             total.completions > 0 ? Double(total.tokens) / Double(total.completions) : 0, total.errors,
                             total.ttft.percentile(0.5) / 1000, total.ttft.percentile(0.99) / 1000, total.ttft.percentile(0.999) / 1000,
                             total.whole.percentile(0.5) / 1000, total.whole.percentile(0.99) / 1000, cpu, rss))
            if total.errors > 0 || total.completions == 0 { failed = true }
        }
        return !failed
    }
}

struct BenchResult {
    var completions = 0
    var tokens = 0
    var errors = 0
    var seconds = 0.0
    var ttft = RTTHistogram()
    var whole = RTTHistogram()

    init() {}
    init?(line: String) {
        let p = line.split(separator: " ")
        guard p.count >= 7, p[0] == "result" else { return nil }
        completions = Int(p[1]) ?? 0
        tokens = Int(p[2]) ?? 0
        errors = Int(p[3]) ?? 0
        seconds = Double(p[4]) ?? 0
        ttft.merge(sparse: String(p[5]))
        whole.merge(sparse: String(p[6]))
    }

    mutating func merge(_ o: BenchResult) {
        completions += o.completions
        tokens += o.tokens
        errors += o.errors
        seconds = max(seconds, o.seconds)
        ttft.merge(sparse: o.ttft.sparse)
        whole.merge(sparse: o.whole.sparse)
    }

    var line: String { "result \(completions) \(tokens) \(errors) \(seconds) \(ttft.sparse) \(whole.sparse)" }
}

/// One client process of `playground bench`.
final class BenchCompletionChild: @unchecked Sendable {
    let loop: EventLoop
    let mode: String
    let window: Int
    let rate: Int
    let body: String
    let key: String
    var result = BenchResult()
    var measuring = false
    var running = true
    var nextID = 1
    var sockets: [WebSocket] = []
    var sseConns: [SSEBenchConnection] = []
    var sent: [Int: UInt64] = [:]
    var firstSeen: Set<Int> = []
    var rr = 0
    var credit = 0.0
    var lastTick: UInt64 = 0

    init(loop: EventLoop, mode: String, window: Int, rate: Int, maxTokens: Int, key: String) {
        self.key = key
        self.loop = loop
        self.mode = mode
        self.window = window
        self.rate = rate
        body = "{\"prompt\":\"\(BenchCommand.prompt)\",\"max_tokens\":\(maxTokens),\"temperature\":0"
    }

    public static func run(_ a: Arguments) throws -> Int32 {
        ProcessLimits.ignoreSIGPIPE()
        ProcessLimits.raiseOpenFileLimit()
        let port = try a.int("port")
        let target = try SocketAddress(host: "127.0.0.1", port: port)
        let source = try SocketAddress(host: a.string("source"), port: 0)
        let connections = try a.int("connections")
        let duration = try a.double("duration")
        let group = try EventLoopGroup(count: 1, namePrefix: "bench")
        group.start()
        let child = BenchCompletionChild(loop: group.loops[0], mode: a.string("mode"),
                                         window: try a.int("window"), rate: try a.int("rate"),
                                         maxTokens: try a.int("max-tokens"), key: a.string("key"))
        let box = UncheckedBox(child)
        let ready = DispatchSemaphore(value: 0)
        group.loops[0].execute { box.value.open(connections, target: target, source: source, ready: ready) }
        ready.wait()
        group.loops[0].execute { box.value.start() }
        usleep(1_000_000)  // warm-up
        let start = monotonicNanos()
        group.loops[0].execute { box.value.result = BenchResult(); box.value.measuring = true }
        usleep(UInt32(duration * 1e6))
        let done = DispatchSemaphore(value: 0)
        let line = Mutex("")
        group.loops[0].execute {
            let c = box.value
            c.measuring = false
            c.running = false
            c.result.seconds = Double(monotonicNanos() - start) / 1e9
            line.withLock { $0 = c.result.line }
            done.signal()
        }
        done.wait()
        printLine(line.withLock { $0 })
        return 0
    }

    func open(_ n: Int, target: SocketAddress, source: SocketAddress, ready: DispatchSemaphore) {
        var remaining = n
        if mode == "sse" {
            for _ in 0..<n {
                sseConns.append(SSEBenchConnection(child: self, target: target, source: source) {
                    remaining -= 1
                    if remaining == 0 { ready.signal() }
                })
            }
            return
        }
        var cfg = WebSocketConfiguration()
        cfg.pingIntervalNanos = 0
        cfg.maxOutboundBytes = 64 << 20
        cfg.maxMessageBytes = 1 << 20
        for _ in 0..<n {
            var headers = HTTPHeaders()
            if !key.isEmpty { headers.add("Authorization", "Bearer \(key)") }
            WebSocketClient.connect(to: target, from: source, path: "/v1/ws", headers: headers, configuration: cfg, loop: loop) { [self] r in
                if case .success(let ws) = r {
                    ws.delegate = BenchEnvelopeDelegate(child: self)
                    sockets.append(ws)
                }
                remaining -= 1
                if remaining == 0 { ready.signal() }
            }
        }
    }

    func start() {
        switch mode {
        case "ws-max":
            for ws in sockets { for _ in 0..<window { send(ws) } }
        case "ws-rate":
            lastTick = monotonicNanos()
            tick()
        default:
            for c in sseConns { c.sendRequest() }
        }
    }

    /// Open loop: every millisecond, send what the rate owes, round-robin over the sockets.
    func tick() {
        guard running else { return }
        let now = monotonicNanos()
        credit += Double(now - lastTick) / 1e9 * Double(rate)
        lastTick = now
        while credit >= 1, !sockets.isEmpty {
            credit -= 1
            send(sockets[rr % sockets.count])
            rr += 1
        }
        loop.schedule(afterNanos: 1_000_000) { [self] in tick() }
    }

    func send(_ ws: WebSocket) {
        let id = nextID
        nextID += 1
        sent[id] = monotonicNanos()
        ws.send(text: "{\"id\":\(id),\"method\":\"POST\",\"path\":\"/v1/completions\",\"body\":\(body)}}")
    }

    /// Reads only what it needs from an envelope frame: the numeric id and the event type.
    func received(_ ws: WebSocket, _ data: UnsafeRawBufferPointer) {
        guard data.count > 20 else { return }
        var i = 6  // after {"id":
        var id = 0
        while i < data.count, data[i] >= 48, data[i] <= 57 { id = id * 10 + Int(data[i] - 48); i += 1 }
        i += 9  // ,"type":"
        guard i + 1 < data.count, let t0 = sent[id] else { return }
        let now = monotonicNanos()
        switch (data[i], data[i + 1]) {
        case (UInt8(ascii: "d"), UInt8(ascii: "e")):
            if firstSeen.insert(id).inserted, measuring { result.ttft.record(micros: Int((now - t0) / 1000)) }
            if measuring { result.tokens += 1 }
        case (UInt8(ascii: "d"), UInt8(ascii: "o")), (UInt8(ascii: "e"), _):
            if data[i] == UInt8(ascii: "e") { if measuring { result.errors += 1 } } else if measuring {
                result.completions += 1
                result.whole.record(micros: Int((now - t0) / 1000))
            }
            sent[id] = nil
            firstSeen.remove(id)
            if mode == "ws-max" && running { send(ws) }
        default:
            break
        }
    }
}

final class BenchEnvelopeDelegate: WebSocketDelegate {
    weak var child: BenchCompletionChild?
    init(child: BenchCompletionChild) { self.child = child }
    func webSocket(_ ws: WebSocket, received opcode: WSOpcode, _ data: UnsafeRawBufferPointer) { child?.received(ws, data) }
    func webSocketClosed(_ ws: WebSocket, code: UInt16?) {}
}

/// One keep-alive HTTP connection posting `stream: true` completions one after another.
final class SSEBenchConnection: ConnectionHandler {
    // Strong: teardown may deliver a close after the child let go of its connections.
    let child: BenchCompletionChild
    var connection: Connection?
    var buffer: [UInt8] = []
    var sentAt: UInt64 = 0
    var sawFirst = false
    let request: [UInt8]
    static let done = Array("data: [DONE]".utf8)
    static let end = Array("\r\n0\r\n\r\n".utf8)
    static let data = Array("data: {".utf8)

    init(child: BenchCompletionChild, target: SocketAddress, source: SocketAddress, connected: @escaping () -> Void) {
        self.child = child
        let body = child.body + ",\"stream\":true}"
        let auth = child.key.isEmpty ? "" : "Authorization: Bearer \(child.key)\r\n"
        request = Array("POST /v1/completions HTTP/1.1\r\nHost: bench\r\n\(auth)Content-Type: application/json\r\nContent-Length: \(body.utf8.count)\r\n\r\n\(body)".utf8)
        connection = try? Connection.connect(to: target, from: source, loop: child.loop) { [self] c, err in
            if err == nil { c.handler = self }
            connected()
        }
    }

    func sendRequest() {
        guard child.running, let c = connection, c.isOpen else { return }
        buffer.removeAll(keepingCapacity: true)
        sawFirst = false
        sentAt = monotonicNanos()
        c.write(request)
    }

    func connectionRead(_ c: Connection, _ bytes: UnsafeMutableRawBufferPointer) {
        buffer.append(contentsOf: bytes)
        let now = monotonicNanos()
        if !sawFirst, contains(SSEBenchConnection.data) {
            sawFirst = true
            if child.measuring { child.result.ttft.record(micros: Int((now - sentAt) / 1000)) }
        }
        guard buffer.count >= 7, buffer.suffix(7).elementsEqual(SSEBenchConnection.end), contains(SSEBenchConnection.done) else { return }
        if child.measuring {
            child.result.completions += 1
            child.result.tokens += max(0, count(SSEBenchConnection.data) - 1)  // the last event carries finish_reason, not a token
            child.result.whole.record(micros: Int((now - sentAt) / 1000))
            if !buffer.starts(with: Array("HTTP/1.1 200".utf8)) { child.result.errors += 1 }
        }
        sendRequest()
    }

    func connectionClosed(_ c: Connection, error: SystemError?) {
        if child.running && child.measuring { child.result.errors += 1 }
    }

    private func contains(_ needle: [UInt8]) -> Bool { count(needle, stopAtFirst: true) > 0 }

    private func count(_ needle: [UInt8], stopAtFirst: Bool = false) -> Int {
        var n = 0
        guard buffer.count >= needle.count else { return 0 }
        var i = 0
        let last = buffer.count - needle.count
        while i <= last {
            if buffer[i] == needle[0] && buffer[i..<(i + needle.count)].elementsEqual(needle) {
                n += 1
                if stopAtFirst { return n }
                i += needle.count
            } else {
                i += 1
            }
        }
        return n
    }
}

/// Helpers shared by the load generators.
public enum BenchSupport {
    struct Child {
        let process: Process
        let output: FileHandle
        let input: FileHandle
    }

    /// Starts this binary with `args`, its stdout and stdin piped to us. The child dies with us
    /// (parent-death signal), and a stop signal to us stops and reaps every child first.
    static func spawn(_ args: [String], quiet: Bool = false, environment: [String: String?] = [:]) throws -> Child {
        stopChildrenOnSignal
        let p = Process()
        p.executableURL = URL(fileURLWithPath: args.first == "bench" || serverBinary.isEmpty ? selfExecutable() : serverBinary)
        p.arguments = args
        var env = ProcessInfo.processInfo.environment
        env[ParentDeath.variable] = "\(getpid())"
        for (k, v) in environment { env[k] = v }
        p.environment = env
        let out = Pipe(), inp = Pipe()
        p.standardOutput = out
        p.standardInput = inp
        if quiet { p.standardError = FileHandle.nullDevice }
        try p.run()
        children.withLock { $0.append(p.processIdentifier) }
        return Child(process: p, output: out.fileHandleForReading, input: inp.fileHandleForWriting)
    }

    private static let children = Mutex<[Int32]>([])
    /// `bench --server-binary`: nodes run from this binary (set once, before any child starts).
    nonisolated(unsafe) static var serverBinary = ""
    /// Set while a stop signal is being handled: the main thread must leave the exit to it.
    public static let stoppingSignal = Atomic<Int32>(0)

    /// SIGTERM/SIGINT: terminate every child, reap each (SIGKILL after 3 s), then exit 128+signal.
    private static let stopChildrenOnSignal: Void = {
        for sig in [SIGTERM, SIGINT] {
            signal(sig, SIG_IGN)
            let source = DispatchSource.makeSignalSource(signal: sig, queue: .global())
            source.setEventHandler {
                stoppingSignal.store(sig, ordering: .releasing)
                // Half-finished figures from the main thread would mislead: nothing more is printed.
                let devNull = open("/dev/null", O_WRONLY)
                if devNull >= 0 { dup2(devNull, 1) }
                let pids = children.withLock { $0 }
                for pid in pids { kill(pid, SIGTERM) }
                let deadline = monotonicNanos() + 3_000_000_000
                for pid in pids {
                    // 0: still running; pid: reaped now; -1 (ECHILD): Foundation reaped it already.
                    var status: Int32 = 0
                    while waitpid(pid, &status, WNOHANG) == 0 {
                        if monotonicNanos() > deadline { kill(pid, SIGKILL) }
                        usleep(10_000)
                    }
                }
                printError("bench: stopped by signal \(sig); \(pids.count) child process(es) stopped")
                fflush(nil)
                _exit(128 + sig)
            }
            source.resume()
            signalSources.append(source)
        }
    }()
    // Written once, under the lazy initialiser of `stopChildrenOnSignal`.
    nonisolated(unsafe) private static var signalSources: [any DispatchSourceSignal] = []

    static func selfExecutable() -> String { BenchWSCommand.selfExecutable() }
    static func readLine(_ h: FileHandle) -> String? { BenchWSCommand.readLine(h) }
    static func cpuSeconds(_ pid: Int32) -> Double { BenchWSCommand.cpuSeconds(pid) }
}
