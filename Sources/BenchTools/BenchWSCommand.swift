import Dispatch
import Foundation
import NetCore
import Runtime
import Synchronization
import WebSocket

/// `playground bench-ws`: a WebSocket load generator built on the project's own event loop and
/// the client mode of its WebSocket codec. The coordinator starts the node(s) under test, spreads
/// connections over child processes (each bound to its own 127.0.0.x, since one process holds at
/// most ~20k descriptors here), measures the nodes' RSS per connection, then lets N active
/// connections echo small frames with a window of W in flight and reports frames/s and round trips.
public enum BenchWSCommand {
    struct Plan {
        var idle: Int
        var active: Int
        var window: Int
        var payload: Int
        var durationSeconds: Double
        var warmupSeconds: Double
        var clients: Int
        var servers: Int
        var serverLoops: Int
        var port: Int
        var target: String?
        var serverPIDs: [Int32]

        init(_ a: Arguments) throws(ArgumentError) {
            idle = try a.int("idle")
            active = try a.int("active")
            window = try a.int("window")
            payload = max(16, try a.int("payload"))
            durationSeconds = try a.double("duration")
            warmupSeconds = try a.double("warmup")
            servers = try a.int("servers")
            serverLoops = try a.int("server-loops")
            port = try a.int("port")
            target = a.optionalString("target")
            serverPIDs = a.string("server-pids").split(separator: ",").compactMap { Int32($0) }
            let total = idle + active
            if a.optionalString("clients") != nil { clients = try a.int("clients") } else { clients = max(1, (total + 15_999) / 16_000) }
            guard clients <= 200, total / clients < 19_500 else {
                throw ArgumentError(message: "too many connections per client process (\(total / max(clients, 1))); raise --clients")
            }
            guard idle >= 0, active >= 0, window >= 1, servers >= 1 else { throw ArgumentError(message: "bad counts") }
        }
    }

    public static let spec = CommandSpec("bench-ws", summary: """
        WebSocket load generator: starts the node(s) under test (or uses --target), opens idle and active
        connections from client processes, measures RSS per connection, then echoes frames and reports
        frames/s and round-trip percentiles.
        """, flags: [
        .option("idle", "N", default: "1000", "idle connections"),
        .option("active", "N", default: "64", "connections echoing frames"),
        .option("window", "N", default: "16", "frames in flight per active connection"),
        .option("payload", "BYTES", default: "16", "frame payload (at least 16)"),
        .option("duration", "S", default: "10", "measured seconds"),
        .option("warmup", "S", default: "2", "seconds before measuring"),
        .option("clients", "N", "client processes (default: one per 16,000 connections)"),
        .option("servers", "N", default: "1", "node processes sharing the port"),
        .option("server-loops", "N", default: "\(CPU.count)", "event loops per node"),
        .option("port", "N", default: "18900", "port of the nodes it starts"),
        .option("target", "HOST:PORT", "an already running node instead"),
        .option("server-pids", "P,P", "with --target: the nodes' pids, for RSS figures"),
        .toggle("child", "internal: run as a client process"),
        .option("source", "ADDR", default: "127.0.0.2", "internal (child): source address"),
    ])

    public static func run(_ args: Arguments) throws -> Int32 {
        if args.bool("child") { return try BenchChild.run(args) }
        let plan = try Plan(args)
        return try coordinate(plan)
    }

    static func selfExecutable() -> String {
        (try? FileManager.default.destinationOfSymbolicLink(atPath: "/proc/self/exe")) ?? CommandLine.arguments[0]
    }

    static func coordinate(_ plan: Plan) throws -> Int32 {
        ProcessLimits.ignoreSIGPIPE()
        var servers: [Process] = []
        var target = plan.target ?? "127.0.0.1:\(plan.port)"
        var pids = plan.serverPIDs
        defer { for s in servers where s.isRunning { s.terminate(); s.waitUntilExit() } }
        if plan.target == nil {
            for _ in 0..<plan.servers {
                let c = try BenchSupport.spawn(["serve", "--host", "127.0.0.1", "--port", "\(plan.port)", "--loops", "\(plan.serverLoops)",
                                                "--conformance-echo", "--log-level", "warning", "--auth", "off", "--share-port"])
                servers.append(c.process)
                pids.append(c.process.processIdentifier)
                // Wait for "listening on".
                let line = readLine(c.output)
                guard line?.hasPrefix("listening on") == true else {
                    printLine("bench-ws: server did not start: \(line ?? "EOF")")
                    return 1
                }
            }
            target = "127.0.0.1:\(plan.port)"
        }
        usleep(200_000)
        let baseline = pids.map { ProcessLimits.residentBytes(pid: $0) }.reduce(0, +)
        printLine("bench-ws: target \(target), \(plan.servers) server process(es) × \(plan.serverLoops) loops, "
                  + "idle \(plan.idle), active \(plan.active) × window \(plan.window), payload \(plan.payload) B, "
                  + "\(plan.clients) client process(es)")

        // Start the client processes; each reports "connected <ok> <failed>".
        var children: [(Process, FileHandle, FileHandle)] = []
        let connectStart = monotonicNanos()
        for i in 0..<plan.clients {
            let idle = share(plan.idle, i, plan.clients), active = share(plan.active, i, plan.clients)
            let c = try BenchSupport.spawn(["bench-ws", "--child", "--target", target, "--source", "127.0.0.\(2 + i % 250)",
                                            "--idle", "\(idle)", "--active", "\(active)", "--window", "\(plan.window)",
                                            "--payload", "\(plan.payload)", "--duration", "\(plan.durationSeconds)",
                                            "--warmup", "\(plan.warmupSeconds)"])
            children.append((c.process, c.output, c.input))
        }
        var connected = 0, failed = 0
        for (_, out, _) in children {
            guard let line = readLine(out), line.hasPrefix("connected ") else {
                printLine("bench-ws: a client process failed to connect")
                return 1
            }
            let parts = line.split(separator: " ")
            connected += Int(parts[1]) ?? 0
            failed += Int(parts[2]) ?? 0
        }
        let connectSeconds = Double(monotonicNanos() - connectStart) / 1e9
        usleep(500_000)
        let loaded = pids.map { ProcessLimits.residentBytes(pid: $0) }.reduce(0, +)
        let perConn = connected > 0 ? Double(loaded - baseline) / Double(connected) : 0
        printLine(String(format: "connections: %d open, %d failed, in %.1f s", connected, failed, connectSeconds))
        printLine(String(format: "server RSS: %.1f MB before, %.1f MB with connections → %.1f KB per connection (%@ servers)",
                         Double(baseline) / 1e6, Double(loaded) / 1e6, perConn / 1000, "\(pids.count)"))

        // Run the active phase.
        let cpuBefore = pids.map(cpuSeconds).reduce(0, +)
        for (_, _, inp) in children { inp.write("go\n".data(using: .utf8)!) }
        var hist = RTTHistogram()
        var frames = 0
        var measured = 0.0
        for (_, out, _) in children {
            guard let line = readLine(out), line.hasPrefix("result ") else {
                printLine("bench-ws: a client process ended without a result")
                return 1
            }
            let parts = line.split(separator: " ")
            frames += Int(parts[1]) ?? 0
            measured = max(measured, Double(parts[2]) ?? 0)
            if parts.count > 3 { hist.merge(sparse: String(parts[3])) }
        }
        let cpuAfter = pids.map(cpuSeconds).reduce(0, +)
        let rssEnd = pids.map { ProcessLimits.residentBytes(pid: $0) }.reduce(0, +)
        for (p, _, _) in children { p.waitUntilExit() }
        if plan.active > 0 && measured > 0 {
            let fps = Double(frames) / measured
            printLine(String(format: "frames: %d echoed in %.1f s → %.0f frames/s out of the server(s); server CPU %.2f core-s (%.0f frames per core-second)",
                             frames, measured, fps, cpuAfter - cpuBefore, Double(frames) / max(0.001, cpuAfter - cpuBefore)))
            printLine(String(format: "round trip: p50 %.3f ms, p99 %.3f ms, p999 %.3f ms, max %.3f ms (%d samples)",
                             hist.percentile(0.50) / 1000, hist.percentile(0.99) / 1000, hist.percentile(0.999) / 1000,
                             Double(hist.maxMicros) / 1000, hist.count))
            printLine(String(format: "server RSS after the run: %.1f MB", Double(rssEnd) / 1e6))
        }
        return failed == 0 ? 0 : 1
    }

    static func share(_ total: Int, _ i: Int, _ n: Int) -> Int { total / n + (i < total % n ? 1 : 0) }

    static func readLine(_ h: FileHandle) -> String? {
        var bytes: [UInt8] = []
        while true {
            let d = h.readData(ofLength: 1)
            if d.isEmpty { return bytes.isEmpty ? nil : String(decoding: bytes, as: UTF8.self) }
            if d[0] == 10 { return String(decoding: bytes, as: UTF8.self) }
            bytes.append(d[0])
        }
    }

    /// utime + stime of a process, in seconds.
    static func cpuSeconds(_ pid: Int32) -> Double {
        guard let s = try? String(contentsOfFile: "/proc/\(pid)/stat", encoding: .utf8),
              let close = s.lastIndex(of: ")") else { return 0 }
        let fields = s[s.index(after: close)...].split(separator: " ")
        guard fields.count > 13 else { return 0 }
        let ticks = (Double(fields[11]) ?? 0) + (Double(fields[12]) ?? 0)
        return ticks / Double(sysconf(Int32(_SC_CLK_TCK)))
    }
}

/// Round-trip times at 1 µs resolution up to 100 ms, then one overflow bucket.
/// Latencies in microseconds: a 1 µs bucket each up to 100 ms, and every slower sample kept
/// as it is, so percentiles past 100 ms are exact too (not clipped at the last bucket).
struct RTTHistogram {
    static let limit = 100_000
    var buckets = [UInt32](repeating: 0, count: RTTHistogram.limit + 1)
    /// Samples above `limit`, exact (rare: they cost an array entry each).
    var slow: [Int] = []
    var count = 0
    var maxMicros = 0

    mutating func record(micros: Int) {
        let m = max(0, micros)
        if m <= RTTHistogram.limit { buckets[m] &+= 1 } else { slow.append(m) }
        count += 1
        if m > maxMicros { maxMicros = m }
    }

    func percentile(_ p: Double) -> Double {
        guard count > 0 else { return 0 }
        let rank = max(1, Int((Double(count) * p).rounded(.up)))
        var seen = 0
        for (i, c) in buckets.enumerated() where c > 0 {
            seen += Int(c)
            if seen >= rank { return Double(i) }
        }
        let sorted = slow.sorted()
        let k = min(rank - seen, sorted.count) - 1
        return k >= 0 ? Double(sorted[k]) : Double(maxMicros)
    }

    var sparse: String {
        var s = "\(maxMicros)"
        for (i, c) in buckets.enumerated() where c > 0 { s += ",\(i):\(c)" }
        for m in slow { s += ",\(m):1" }
        return s
    }

    mutating func merge(sparse: String) {
        let parts = sparse.split(separator: ",")
        maxMicros = max(maxMicros, Int(parts.first ?? "0") ?? 0)
        for p in parts.dropFirst() {
            let kv = p.split(separator: ":")
            guard kv.count == 2, let i = Int(kv[0]), i >= 0, let c = Int(kv[1]), c > 0 else { continue }
            if i <= RTTHistogram.limit { buckets[i] &+= UInt32(c) } else { slow += repeatElement(i, count: c) }
            count += c
        }
    }
}

/// One client process: opens its share of connections on one loop, then echoes when told to go.
final class BenchChild: @unchecked Sendable {
    let loop: EventLoop
    let target: SocketAddress
    let source: SocketAddress
    let idleWanted: Int
    let activeWanted: Int
    let window: Int
    let payload: Int
    var opened = 0
    var failed = 0
    var inFlightConnects = 0
    var nextToOpen = 0
    /// Source ports are assigned, not searched for: 20000, 20001, … on this child's own 127.0.0.x.
    var nextPort = 20_000
    var sockets: [WebSocket] = []
    var measuring = false
    var running = false
    var frames = 0
    var hist = RTTHistogram()
    let allConnected = DispatchSemaphore(value: 0)
    var connectedSignalled = false

    init(loop: EventLoop, target: SocketAddress, source: SocketAddress, idle: Int, active: Int, window: Int, payload: Int) {
        self.loop = loop
        self.target = target
        self.source = source
        idleWanted = idle
        activeWanted = active
        self.window = window
        self.payload = payload
    }

    public static func run(_ a: Arguments) throws -> Int32 {
        ProcessLimits.ignoreSIGPIPE()
        ProcessLimits.raiseOpenFileLimit()
        let t = a.string("target").split(separator: ":")
        guard t.count == 2, let port = Int(t[1]) else { throw ArgumentError(message: "--target must be HOST:PORT") }
        let target = try SocketAddress(host: String(t[0]), port: port)
        let source = try SocketAddress(host: a.string("source"), port: 0)
        let group = try EventLoopGroup(count: 1, namePrefix: "bench")
        group.start()
        let child = BenchChild(loop: group.loops[0], target: target, source: source,
                               idle: try a.int("idle"), active: try a.int("active"),
                               window: try a.int("window"), payload: try a.int("payload"))
        let duration = try a.double("duration"), warmup = try a.double("warmup")
        let box = UncheckedBox(child)
        group.loops[0].execute { box.value.openMore() }
        child.allConnected.wait()
        printLine("connected \(child.opened) \(child.failed)")
        // Wait for the coordinator's "go".
        _ = Swift.readLine()
        group.loops[0].execute { box.value.startEchoing() }
        usleep(UInt32(warmup * 1e6))
        group.loops[0].execute { box.value.measuring = true; box.value.frames = 0 }
        let start = monotonicNanos()
        usleep(UInt32(duration * 1e6))
        let done = DispatchSemaphore(value: 0)
        let result = Mutex<String>("")
        group.loops[0].execute {
            let c = box.value
            c.measuring = false
            c.running = false
            let secs = Double(monotonicNanos() - start) / 1e9
            result.withLock { $0 = "result \(c.frames) \(secs) \(c.hist.sparse)" }
            done.signal()
        }
        done.wait()
        printLine(result.withLock { $0 })
        return 0
    }

    /// Keeps at most 256 handshakes in flight so the server's accept queue never overflows.
    func openMore() {
        let total = idleWanted + activeWanted
        while inFlightConnects < 256 && nextToOpen < total {
            nextToOpen += 1
            inFlightConnects += 1
            var cfg = WebSocketConfiguration()
            cfg.pingIntervalNanos = 0
            cfg.maxOutboundBytes = 16 << 20
            let from = (try? SocketAddress(host: source.host, port: nextPort)) ?? source
            nextPort += 1
            WebSocketClient.connect(to: target, from: from, path: "/_conformance/echo", configuration: cfg, loop: loop) { [self] r in
                inFlightConnects -= 1
                switch r {
                case .success(let ws):
                    opened += 1
                    sockets.append(ws)
                case .failure:
                    failed += 1
                }
                if opened + failed == total {
                    if !connectedSignalled { connectedSignalled = true; allConnected.signal() }
                } else {
                    openMore()
                }
            }
        }
        if total == 0 && !connectedSignalled { connectedSignalled = true; allConnected.signal() }
    }

    func startEchoing() {
        running = true
        let activeSockets = sockets.suffix(activeWanted)
        for ws in activeSockets {
            ws.delegate = BenchEcho(child: self)
            for _ in 0..<window { sendFrame(ws) }
        }
    }

    /// Reused for every frame: the generator must not allocate per frame either.
    lazy var frameBuffer: UnsafeMutableRawBufferPointer = {
        let p = UnsafeMutableRawBufferPointer.allocate(byteCount: payload, alignment: 8)
        p.initializeMemory(as: UInt8.self, repeating: 0)
        return p
    }()

    func sendFrame(_ ws: WebSocket) {
        frameBuffer.storeBytes(of: monotonicNanos(), toByteOffset: 0, as: UInt64.self)
        ws.send(.binary, UnsafeRawBufferPointer(frameBuffer))
    }

    func received(_ ws: WebSocket, _ data: UnsafeRawBufferPointer) {
        guard data.count >= 8 else { return }
        let sent = data.loadUnaligned(as: UInt64.self)
        if measuring {
            frames += 1
            hist.record(micros: Int((monotonicNanos() &- sent) / 1000))
        }
        if running { sendFrame(ws) }
    }
}

final class BenchEcho: WebSocketDelegate {
    weak var child: BenchChild?
    init(child: BenchChild) { self.child = child }
    func webSocket(_ ws: WebSocket, received opcode: WSOpcode, _ data: UnsafeRawBufferPointer) { child?.received(ws, data) }
    func webSocketClosed(_ ws: WebSocket, code: UInt16?) {}
}

