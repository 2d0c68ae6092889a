import HTTP1
import NetCore
import Runtime
import WebSocket
#if canImport(Glibc)
import Glibc
#endif

/// Settings of a node, from flags and PLAYGROUND_* variables; printed at start.
struct NodeConfig {
    var host: String
    var port: Int
    var loops: Int
    var conformanceEcho: Bool
    var allowedOrigins: [String]
    var logLevel: LogLevel
    var requestReadTimeoutMs: Int
    var idleTimeoutMs: Int
    var pingIntervalMs: Int
    var pongTimeoutMs: Int
    var maxOutboundBytes: Int

    init(_ a: Arguments) throws(ArgumentError) {
        host = a.string("host", default: "127.0.0.1")
        port = try a.int("port", default: 8080)
        loops = try a.int("loops", default: CPU.count)
        conformanceEcho = a.bool("conformance-echo")
        allowedOrigins = a.string("allowed-origins", default: "").split(separator: ",").map { String($0) }
        let lvl = a.string("log-level", default: "info")
        guard let l = LogLevel(name: lvl) else { throw ArgumentError(message: "--log-level: unknown level '\(lvl)'") }
        logLevel = l
        requestReadTimeoutMs = try a.int("request-timeout-ms", default: 10_000)
        idleTimeoutMs = try a.int("idle-timeout-ms", default: 60_000)
        pingIntervalMs = try a.int("ping-interval-ms", default: 30_000)
        pongTimeoutMs = try a.int("pong-timeout-ms", default: 10_000)
        maxOutboundBytes = try a.int("max-outbound-bytes", default: 1 << 20)
        guard (0...65535).contains(port) else { throw ArgumentError(message: "--port must be 0...65535") }
        guard loops >= 1 && loops <= 256 else { throw ArgumentError(message: "--loops must be 1...256") }
        guard requestReadTimeoutMs > 0, idleTimeoutMs > 0, pongTimeoutMs > 0, pingIntervalMs >= 0 else {
            throw ArgumentError(message: "timeouts must be positive")
        }
    }

    var summary: [String: String] {
        ["host": host, "port": "\(port)", "loops": "\(loops)", "conformance_echo": "\(conformanceEcho)",
         "allowed_origins": allowedOrigins.joined(separator: ","), "request_timeout_ms": "\(requestReadTimeoutMs)",
         "idle_timeout_ms": "\(idleTimeoutMs)", "ping_interval_ms": "\(pingIntervalMs)", "pong_timeout_ms": "\(pongTimeoutMs)",
         "max_outbound_bytes": "\(maxOutboundBytes)"]
    }

    var webSocket: WebSocketConfiguration {
        var c = WebSocketConfiguration()
        c.origins = OriginPolicy(allowed: allowedOrigins)
        c.pingIntervalNanos = UInt64(pingIntervalMs) * 1_000_000
        c.pongTimeoutNanos = UInt64(pongTimeoutMs) * 1_000_000
        c.maxOutboundBytes = maxOutboundBytes
        return c
    }
}

enum ServeCommand {
    static func run(_ args: Arguments) throws -> Int32 {
        let config = try NodeConfig(args)
        let logger = Logger(label: "playground", level: config.logLevel)
        ProcessLimits.ignoreSIGPIPE()
        let fdLimit = ProcessLimits.raiseOpenFileLimit()
        // Block the stop signals before threads start so only sigwait below sees them.
        var signals = sigset_t()
        sigemptyset(&signals)
        sigaddset(&signals, SIGTERM)
        sigaddset(&signals, SIGINT)
        pthread_sigmask(SIG_BLOCK, &signals, nil)

        let group = try EventLoopGroup(count: config.loops)
        let router = Router()
        Routes.install(on: router, config: config)
        var http = HTTPServerConfiguration()
        http.requestReadTimeoutNanos = UInt64(config.requestReadTimeoutMs) * 1_000_000
        http.idleTimeoutNanos = UInt64(config.idleTimeoutMs) * 1_000_000
        let server = HTTPServer(router: router, configuration: http, logger: logger)
        let address = try server.start(group: group, host: config.host, port: config.port)
        group.start()
        logger.info("node started", config.summary.merging([
            "url": "http://\(address)", "open_file_limit": "\(fdLimit)",
            "connection_capacity": "\(max(0, fdLimit - 64))",
        ]) { a, _ in a })
        // A machine-readable line for scripts that start a node on port 0.
        printLine("listening on http://\(address)")

        var sig: Int32 = 0
        sigwait(&signals, &sig)
        logger.info("stopping", ["signal": "\(sig)"])
        group.shutdown()
        return 0
    }
}
