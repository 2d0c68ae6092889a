import Dispatch
import Domain
import FleetCore
import Gateway
import HTTP1
import Models
import Worker
import NetCore
import Storage
import RedisCoordination
import Runtime
import Synchronization
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
    var slots: Int
    var maxQueue: Int
    var maxTokensCap: Int
    var modelTTFTMs: Double
    var modelTokenMs: Double
    var modelJitter: Double
    var publicDir: String
    var drainSeconds: Double
    var faults = FaultPlan()
    var databaseURL: String?
    var authEnabled: Bool
    var sqlDir: String
    var dbPoolSize: Int
    var cookieSecure: Bool
    var sseKeepaliveMs: Int
    var sharePort: Bool
    var rateLimitRPM: Int
    var maxConcurrent: Int
    var leaseTTLMs: Int
    var presetCacheFreshSeconds: Int
    /// Bounds of the preset-write outbox (writes queued while PostgreSQL is down).
    var outboxMaxWrites: Int
    var outboxMaxUserBytes: Int
    var outboxMaxTotalBytes: Int
    var models: ModelsConfig?
    var redis: RedisEndpoint?
    var luaDir: String
    var fleet: String
    var jobShards: Int
    var fleetPort: Int
    var fleetHost: String
    var fleetAdvertise: String?
    var linksEnabled: Bool

    /// Every flag of a node's role (`model-server` differs in a few defaults).
    static func spec(_ role: NodeRole) -> CommandSpec {
        let modelServer = role == .modelServer
        return CommandSpec(role.rawValue, summary: role.summary, flags: [
            .option("host", "ADDR", default: "127.0.0.1", "address to listen on"),
            .option("port", "N", default: modelServer ? "9090" : "8080", "port to listen on (0 picks a free one)"),
            .toggle("share-port", "join a port another process already listens on (SO_REUSEPORT), splitting its traffic"),
            .option("loops", "N", default: "\(CPU.count)", "event-loop threads"),
            .option("log-level", "LEVEL", default: "info", "debug, info, warning or error"),
            .option("allowed-origins", "A,B", default: "", "extra browser origins allowed (the node's own always is)"),
            .option("request-timeout-ms", "MS", default: "10000", "from a request's first byte to its complete head and body"),
            .option("idle-timeout-ms", "MS", default: "60000", "idle keep-alive connections are closed after this"),
            .option("ping-interval-ms", "MS", default: "30000", "WebSocket ping interval (0: none)"),
            .option("pong-timeout-ms", "MS", default: "10000", "a WebSocket peer silent this long after a ping is dropped"),
            .option("max-outbound-bytes", "N", default: "\(1 << 20)", "unread output a WebSocket may queue before it is dropped"),
            .option("rate-limit-rpm", "N", default: modelServer ? "0" : "60", "completions one user may start in any 60 s (0: no limit)"),
            .option("max-concurrent", "N", default: modelServer ? "0" : "2", "generations one user may run at once (0: no limit; both 0: limits off)"),
            .option("lease-ttl-ms", "MS", default: "30000", "a generation's concurrency lease, renewed every third of it"),
            .option("preset-cache-fresh-s", "S", default: "300", "a cached preset older than this is checked against PostgreSQL while it is up"),
            .option("outbox-max-writes", "N", default: "10000", "preset writes one user may have waiting for PostgreSQL"),
            .option("outbox-max-user-bytes", "N", default: "\(16 << 20)", "bytes of preset writes one user may have waiting for PostgreSQL"),
            .option("outbox-max-total-bytes", "N", default: "\(512 << 20)", "bytes of preset writes all users together may have waiting (Redis memory)"),
            .option("models", "FILE", "upstream model servers and model aliases (JSON; see docs/MODELS.md); without it only the built-in model"),
            .option("slots", "N", default: "256", "generations at once"),
            .option("max-queue", "N", default: "1024", "completions that may wait for a slot"),
            .option("max-tokens-cap", "N", default: "2048", "the largest max_tokens accepted"),
            .option("model-ttft-ms", "MS", default: "150", "the built-in model's time to first token"),
            .option("model-token-ms", "MS", default: "30", "the built-in model's time per token"),
            .option("tokens-per-second", "N", "the built-in model's pace as tokens/s (instead of --model-token-ms)"),
            .option("model-jitter", "F", default: "0.2", "± this fraction of random variation on each delay"),
            .option("error-rate", "F", default: "0", "fraction of completions refused before the first token"),
            .option("midstream-failure-rate", "F", default: "0", "fraction of streams dropped after a few tokens"),
            .option("stall-rate", "F", default: "0", "fraction of streams that stop sending tokens"),
            .option("throttle-rate", "F", default: "0", "fraction of completions refused with 429 and Retry-After: 1"),
            .option("slow-first-token-rate", "F", default: "0", "fraction of completions whose first token is late (see --slow-first-token-ms)"),
            .option("slow-first-token-ms", "MS", default: "1000", "how late such a first token is"),
            .option("public-dir", "DIR", default: ProjectPaths.directory("Public", marker: "index.html"), "the page's files"),
            .option("drain-seconds", "S", default: "30", "how long SIGTERM waits for running streams"),
            .option("sse-keepalive-ms", "MS", default: "15000", "SSE comment interval while a stream waits for its first token"),
            .option("database-url", "URL", "PostgreSQL for identities and presets (or DATABASE_URL)"),
            .option("redis-url", "URL", "Redis shared by the fleet: redis://[:password@]host:port[/db], or redis-cluster://[:password@]host:port[,host:port…] for a Redis Cluster (or REDIS_URL); without it limits are this node's own"),
            .option("fleet", "NAME", default: "main", "the fleet this node joins on that Redis (its own queue and heartbeats; limits are shared)"),
            .option("job-shards", "K", default: "auto", "job streams the fleet's queue is split into (1-64; auto: 1 on one Redis, 8 on a cluster; every node of a fleet the same: the first one's number is kept in Redis)"),
            .option("fleet-port", "N", default: "0", "where workers stream tokens to this gateway (stream links; 0 picks a free one)"),
            .option("fleet-host", "ADDR", "address the stream links listen on (default: --host)"),
            .option("fleet-advertise", "HOST", "host workers dial for this gateway's links (default: the link address, or this machine's name for 0.0.0.0)"),
            .option("links", "MODE", default: "on", "on: workers stream tokens over direct links (PLAYGROUND_FLEET_SECRET, or one kept in Redis); off: through Redis pub/sub"),
            .option("lua-dir", "DIR", default: ProjectPaths.directory("lua", marker: "admit.lua"), "the Redis scripts"),
            .option("auth", "MODE", default: modelServer ? "off" : "keys", "keys: API keys and sessions; off: everyone is one local user"),
            .option("sql-dir", "DIR", default: ProjectPaths.directory("sql", marker: "001_schema.sql"), "migrations"),
            .option("db-pool-size", "N", default: "4", "PostgreSQL connections (one thread each)"),
            .toggle("cookie-secure", "mark the session cookie Secure (behind HTTPS)"),
            .toggle("conformance-echo", "test-only routes used by the conformance tests"),
        ])
    }

    init(_ a: Arguments, role: NodeRole = .serve) throws(ArgumentError) {
        host = a.string("host")
        port = try a.int("port")
        loops = try a.int("loops")
        conformanceEcho = a.bool("conformance-echo")
        allowedOrigins = a.string("allowed-origins").split(separator: ",").map { String($0) }
        let lvl = a.string("log-level")
        guard let l = LogLevel(name: lvl) else { throw ArgumentError(message: "--log-level: unknown level '\(lvl)'") }
        logLevel = l
        requestReadTimeoutMs = try a.int("request-timeout-ms")
        idleTimeoutMs = try a.int("idle-timeout-ms")
        pingIntervalMs = try a.int("ping-interval-ms")
        pongTimeoutMs = try a.int("pong-timeout-ms")
        maxOutboundBytes = try a.int("max-outbound-bytes")
        slots = try a.int("slots")
        maxQueue = try a.int("max-queue")
        maxTokensCap = try a.int("max-tokens-cap")
        modelTTFTMs = try a.double("model-ttft-ms")
        if let tps = a.optionalString("tokens-per-second") {
            guard let v = Double(tps), v > 0, v.isFinite else { throw ArgumentError(message: "--tokens-per-second must be a positive number") }
            modelTokenMs = 1000 / v
        } else {
            modelTokenMs = try a.double("model-token-ms")
        }
        modelJitter = try a.double("model-jitter")
        publicDir = a.string("public-dir")
        drainSeconds = try a.double("drain-seconds")
        databaseURL = a.optionalString("database-url") ?? Arguments.environment("DATABASE_URL")
        let auth = a.string("auth")
        guard auth == "keys" || auth == "off" else { throw ArgumentError(message: "--auth must be 'keys' or 'off'") }
        authEnabled = auth == "keys"
        if role == .worker {
            // A worker serves no API: no credentials, no database (completions never need one).
            authEnabled = false
            databaseURL = nil
        }
        if authEnabled && databaseURL == nil {
            throw ArgumentError(message: "--auth keys needs a database: set DATABASE_URL or --database-url (or run with --auth off)")
        }
        sqlDir = a.string("sql-dir")
        dbPoolSize = try a.int("db-pool-size")
        cookieSecure = a.bool("cookie-secure")
        sseKeepaliveMs = try a.int("sse-keepalive-ms")
        sharePort = a.bool("share-port")
        rateLimitRPM = try a.int("rate-limit-rpm")
        maxConcurrent = try a.int("max-concurrent")
        leaseTTLMs = try a.int("lease-ttl-ms")
        presetCacheFreshSeconds = try a.int("preset-cache-fresh-s")
        outboxMaxWrites = try a.int("outbox-max-writes")
        outboxMaxUserBytes = try a.int("outbox-max-user-bytes")
        outboxMaxTotalBytes = try a.int("outbox-max-total-bytes")
        guard (1...1_000_000).contains(outboxMaxWrites) else { throw ArgumentError(message: "--outbox-max-writes must be 1...1000000") }
        guard (1024...(1 << 34)).contains(outboxMaxUserBytes) else { throw ArgumentError(message: "--outbox-max-user-bytes must be 1024...17179869184") }
        guard (1024...(1 << 40)).contains(outboxMaxTotalBytes) else { throw ArgumentError(message: "--outbox-max-total-bytes must be 1024...1099511627776") }
        if let file = a.optionalString("models") {
            do throws(ConfigError) {
                models = try ModelsConfig.load(path: file, environment: { Arguments.environment($0) })
            } catch {
                throw ArgumentError(message: "--models: \(error.description)")
            }
        }
        guard (0...86_400).contains(presetCacheFreshSeconds) else { throw ArgumentError(message: "--preset-cache-fresh-s must be 0...86400") }
        fleetPort = try a.int("fleet-port")
        guard (0...65535).contains(fleetPort) else { throw ArgumentError(message: "--fleet-port must be 0...65535") }
        fleetHost = a.optionalString("fleet-host") ?? host
        fleetAdvertise = a.optionalString("fleet-advertise")
        let links = a.string("links")
        guard links == "on" || links == "off" else { throw ArgumentError(message: "--links must be 'on' or 'off'") }
        linksEnabled = links == "on"
        luaDir = a.string("lua-dir")
        fleet = a.string("fleet")
        guard FleetKeys.isValidName(fleet) else { throw ArgumentError(message: "--fleet: letters, digits, '-' and '_' only (1...64)") }
        if let url = a.optionalString("redis-url") ?? Arguments.environment("REDIS_URL") {
            guard let e = RedisEndpoint(url: url) else { throw ArgumentError(message: "--redis-url must look like redis://[:password@]host:port[/db] or redis-cluster://[:password@]host:port[,host:port…]") }
            redis = e
        }
        // auto: one stream on one Redis; on a cluster, 8 (spread over the masters of a small
        // cluster, and what one failing master takes out of the queue is its share only).
        let shards = a.string("job-shards")
        if shards == "auto" {
            jobShards = redis?.isCluster == true ? 8 : 1
        } else {
            guard let k = Int(shards), (1...FleetKeys.maxShards).contains(k) else {
                throw ArgumentError(message: "--job-shards: 'auto' or 1 to \(FleetKeys.maxShards)")
            }
            jobShards = k
        }
        if (role == .gateway || role == .worker) && redis == nil {
            throw ArgumentError(message: "playground \(role.rawValue) needs Redis: set REDIS_URL or --redis-url")
        }
        guard rateLimitRPM >= 0, maxConcurrent >= 0 else { throw ArgumentError(message: "--rate-limit-rpm and --max-concurrent must be ≥ 0") }
        guard (1000...3_600_000).contains(leaseTTLMs) else { throw ArgumentError(message: "--lease-ttl-ms must be 1000...3600000") }
        faults.errorRate = try a.double("error-rate")
        faults.midstreamFailureRate = try a.double("midstream-failure-rate")
        faults.stallRate = try a.double("stall-rate")
        faults.throttleRate = try a.double("throttle-rate")
        faults.slowFirstTokenRate = try a.double("slow-first-token-rate")
        let slowMs = try a.double("slow-first-token-ms")
        guard (0...3_600_000).contains(slowMs) else { throw ArgumentError(message: "--slow-first-token-ms must be 0...3600000") }
        faults.slowFirstTokenNanos = UInt64(slowMs * 1e6)
        guard (1...64).contains(dbPoolSize) else { throw ArgumentError(message: "--db-pool-size must be 1...64") }
        guard (0...65535).contains(port) else { throw ArgumentError(message: "--port must be 0...65535") }
        guard loops >= 1 && loops <= 256 else { throw ArgumentError(message: "--loops must be 1...256") }
        // Bounded so that conversions to nanoseconds cannot overflow.
        let day = 86_400_000
        for (n, v, low) in [("request-timeout-ms", requestReadTimeoutMs, 1), ("idle-timeout-ms", idleTimeoutMs, 1),
                            ("pong-timeout-ms", pongTimeoutMs, 1), ("ping-interval-ms", pingIntervalMs, 0),
                            ("sse-keepalive-ms", sseKeepaliveMs, 0)] {
            guard (low...day).contains(v) else { throw ArgumentError(message: "--\(n) must be \(low)...\(day) (milliseconds)") }
        }
        guard (0...86_400).contains(drainSeconds) else { throw ArgumentError(message: "--drain-seconds must be 0...86400") }
        guard (1024...(1 << 30)).contains(maxOutboundBytes) else { throw ArgumentError(message: "--max-outbound-bytes must be 1024...1073741824") }
        guard slots >= 1, maxQueue >= 0 else { throw ArgumentError(message: "--slots must be ≥ 1 and --max-queue ≥ 0") }
        guard (1...1_000_000).contains(maxTokensCap) else { throw ArgumentError(message: "--max-tokens-cap must be 1...1000000") }
        guard (0...Double(day)).contains(modelTTFTMs), (0...Double(day)).contains(modelTokenMs), (0...1).contains(modelJitter) else {
            throw ArgumentError(message: "model pace must be ≥ 0 and jitter within 0...1")
        }
        for (n, v) in [("error-rate", faults.errorRate), ("midstream-failure-rate", faults.midstreamFailureRate), ("stall-rate", faults.stallRate),
                       ("throttle-rate", faults.throttleRate), ("slow-first-token-rate", faults.slowFirstTokenRate)] {
            guard (0...1).contains(v) else { throw ArgumentError(message: "--\(n) must be within 0...1") }
        }
    }

    var summary: [String: String] {
        ["host": host, "port": "\(port)", "loops": "\(loops)", "conformance_echo": "\(conformanceEcho)",
         "allowed_origins": allowedOrigins.joined(separator: ","), "request_timeout_ms": "\(requestReadTimeoutMs)",
         "idle_timeout_ms": "\(idleTimeoutMs)", "ping_interval_ms": "\(pingIntervalMs)", "pong_timeout_ms": "\(pongTimeoutMs)",
         "max_outbound_bytes": "\(maxOutboundBytes)", "slots": "\(slots)", "max_queue": "\(maxQueue)",
         "max_tokens_cap": "\(maxTokensCap)", "model_ttft_ms": "\(modelTTFTMs)", "model_token_ms": "\(modelTokenMs)",
         "model_jitter": "\(modelJitter)", "public_dir": publicDir, "drain_seconds": "\(drainSeconds)",
         "error_rate": "\(faults.errorRate)", "midstream_failure_rate": "\(faults.midstreamFailureRate)", "stall_rate": "\(faults.stallRate)",
         "database_url": databaseURL.map(NodeConfig.maskPassword) ?? "-", "auth": authEnabled ? "keys" : "off", "sql_dir": sqlDir,
         "db_pool_size": "\(dbPoolSize)", "share_port": "\(sharePort)", "rate_limit_rpm": "\(rateLimitRPM)",
         "max_concurrent": "\(maxConcurrent)", "lease_ttl_ms": "\(leaseTTLMs)", "redis_url": redis?.masked ?? "-",
         "lua_dir": luaDir, "fleet": fleet, "links": linksEnabled ? "on" : "off"]
    }

    /// postgresql://user:secret@host → postgresql://user:***@host
    static func maskPassword(_ url: String) -> String {
        guard let at = url.lastIndex(of: "@"), let scheme = url.range(ofLiteral: "://") else { return url }
        let userinfo = url[scheme.upperBound..<at]
        guard let colon = userinfo.firstIndex(of: ":") else { return url }
        return String(url[..<colon]) + ":***" + String(url[at...])
    }

    /// Per-user limits, or nil when both are 0 (benchmarks).
    var quota: Quota? {
        guard rateLimitRPM > 0 || maxConcurrent > 0 else { return nil }
        return Quota(requestsPerMinute: rateLimitRPM == 0 ? .max : rateLimitRPM, concurrency: maxConcurrent == 0 ? .max : maxConcurrent)
    }

    var webSocket: WebSocketConfiguration {
        var c = WebSocketConfiguration()
        c.origins = OriginPolicy(allowed: allowedOrigins)
        c.pingIntervalNanos = UInt64(pingIntervalMs) * 1_000_000
        c.pongTimeoutNanos = UInt64(pongTimeoutMs) * 1_000_000
        c.maxOutboundBytes = maxOutboundBytes
        c.maxMessageBytes = 1 << 20
        // A message, like an HTTP request, must arrive whole within the request timeout.
        c.messageTimeoutNanos = UInt64(requestReadTimeoutMs) * 1_000_000
        return c
    }
}

/// What a node process does. `serve` is a gateway and a worker in one process, talking through
/// the same Redis path as separate nodes (or, without Redis, a node on its own).
enum NodeRole: String {
    case serve, gateway, worker
    case modelServer = "model-server"

    var summary: String {
        switch self {
        case .serve: return "Runs a node (HTTP/1.1, WebSocket, the page, the API, generations) until SIGTERM/SIGINT, then drains."
        case .gateway: return "Runs a gateway (transports, identity, admission, enqueue, relay to clients); needs Redis."
        case .worker: return "Runs a worker (pulls jobs while it has free slots, runs the generations); needs Redis."
        case .modelServer: return "Serves the built-in model over the OpenAI-compatible API, with fault knobs: the stand-in for model regions."
        }
    }
    var servesAPI: Bool { self != .worker }
    var runsGenerations: Bool { self != .gateway }
}

/// `playground serve|gateway|worker|model-server`: build the node's services in order, run until
/// SIGTERM/SIGINT, then drain them in reverse.
enum ServeCommand {
    static let models = ["builtin"]

    static func run(_ args: Arguments, role: NodeRole) throws -> Int32 {
        let config = try NodeConfig(args, role: role)
        let modelServer = role == .modelServer
        let logger = Logger(label: modelServer ? "model-server" : "playground", level: config.logLevel)
        // Before any thread starts: a stop signal during start-up ends the process at once.
        let stopSignals = StopSignals()
        // A port in use is refused before anything else starts (no threads to stop, nothing to undo).
        if !config.sharePort { try TCPServer.checkPortFree(host: config.host, port: config.port) }
        ProcessLimits.ignoreSIGPIPE()
        let fdLimit = ProcessLimits.raiseOpenFileLimit()

        // Every long-running part is a service: started in order below, stopped in reverse on
        // SIGTERM/SIGINT (or at once if a later one fails to start).
        let services = ServiceGroup(logger: logger)
        let group = try EventLoopGroup(count: config.loops)
        try services.start(ServiceHandle("event loops", stop: { _ in group.shutdown() }))
        // Set on SIGTERM: /readyz answers 503 from then on, whatever the role.
        let draining = Atomic<Bool>(false)
        let metrics = Metrics()
        let nodeID = NodeIdentity.make()
        let model = NGramModel()
        let fleetMode = config.redis != nil && !modelServer
        let builtin = BuiltinBackend(model: model, pace: ModelPace(ttftMs: config.modelTTFTMs, tokenMs: config.modelTokenMs, jitter: config.modelJitter),
                                     faults: config.faults)
        // With a models file, generations go through the model proxy (upstreams, aliases, breakers).
        var proxy: ProxyBackend?
        if let m = config.models, role.runsGenerations {
            do {
                proxy = try ProxyBackend(config: m, builtin: builtin) { host, port in try SocketAddress.resolve(host: host, port: port) }
            } catch {
                throw ArgumentError(message: "--models: \(error)")
            }
        }
        let backend: ModelBackend = proxy ?? builtin
        // One engine for every role: a gateway side and a worker side meeting through the fleet's
        // ports, in Redis or in this process's memory. A process with both sides keeps the
        // worker's counts apart (playground_worker_*): the gateway's are what clients see.
        let workerMetrics = role.servesAPI ? Metrics(prefix: "playground_worker") : metrics
        let local: LocalFleet? = role.servesAPI && role.runsGenerations ? LocalFleet(maxBacklog: config.maxQueue) : nil
        // The public model names: builtin, and the models file's aliases.
        var models = ServeCommand.models
        for a in config.models?.publicModels ?? [] where !models.contains(a) { models.append(a) }
        var policy = ParameterPolicy(defaultModel: models[0], knownModels: models, maxTokensCap: config.maxTokensCap)
        policy.upstreamModels = config.models?.upstreamModels ?? []
        policy.deniedFields = config.models?.deniedFields ?? []
        policy.choicesCap = config.models?.maxChoices ?? ParameterPolicy.maxChoices

        // PostgreSQL: migrations at start, the pool, the identity cache fed by LISTEN.
        var pool: PGPool?
        var identities: IdentityStore?
        if let url = config.databaseURL, role.servesAPI {
            let p = PGPool(url: url, size: config.dbPoolSize, logger: logger)
            try services.start(ServiceHandle("postgres pool", start: {
                p.start()
                do {
                    let applied = try p.runBlocking { conn throws(PGError) in try Migrations.apply(conn, directory: config.sqlDir) }
                    if !applied.isEmpty { logger.info("migrations applied", ["files": applied.map(\.name).joined(separator: ",")]) }
                    if let d = try p.runBlocking({ conn throws(PGError) in try PresetRepository.wordsDisagreement(conn) }) {
                        logger.warning("the database splits words unlike the preset search: create it with a UTF-8 locale such as C.UTF-8 "
                                       + "(search misses non-ASCII words; the cache's degraded search disagrees)", ["detail": d])
                    }
                } catch {
                    // A database that is down at start must not stop completions; presets degrade until it is back.
                    logger.error("migrations not applied", ["error": "\(error)"])
                }
            }, stop: { _ in p.stop() }))
            pool = p
            identities = IdentityStore(pool: p, logger: logger)
        }

        // Redis: commands (pipelined), blocking claims and subscriptions each on their own connection.
        var redis: FleetRedis?
        if let endpoint = config.redis, !modelServer {
            // Every node of a fleet splits its queue the same way (else jobs wait on shards nobody
            // reads): the first node's number is kept in Redis, a node started with another is
            // refused. Checked when Redis answers at start; a node that starts without Redis
            // cannot check (it says so).
            if let r = try? BlockingRedis(endpoint: endpoint, timeoutSeconds: 1) {
                let kept = (try? FleetAdmin.agreeOnShards(r, fleet: config.fleet, shards: config.jobShards)) ?? config.jobShards
                r.close()
                guard kept == config.jobShards else {
                    throw ArgumentError(message: "--job-shards: fleet '\(config.fleet)' runs with \(kept) job shards (kept in Redis at "
                                        + "\(FleetKeys(fleet: config.fleet).shardsKey)); start this node with --job-shards \(kept)")
                }
            } else {
                logger.warning("Redis did not answer at start: this node's --job-shards is not checked against the fleet's", ["job_shards": "\(config.jobShards)"])
            }
        }
        if let endpoint = config.redis {
            let r = try FleetRedis(endpoint: endpoint, group: group, nodeID: nodeID, role: role, config: config, logger: logger)
            r.heartbeat.runsGenerations = role.runsGenerations
            try services.start(ServiceHandle("redis", start: { r.heartbeat.start() }, stop: { _ in r.heartbeat.stop() }))
            redis = r
        }
        // Stream links: workers send tokens straight to the gateway holding the client; both
        // ends prove they hold the fleet's secret.
        // A secret kept in Redis is read when Redis answers (a node starts while Redis is down;
        // until then no link is opened or accepted, and its tokens go through the relay).
        var linkAuth: LinkAuth?
        let linkSecret = SecretHolder()
        if let redis, fleetMode, config.linksEnabled {
            let environment = Arguments.environment("PLAYGROUND_FLEET_SECRET")
            if let environment, environment.utf8.count < 16 { throw ArgumentError(message: "\(FleetSecret.Failure.tooShort)") }
            let keys = FleetKeys(fleet: config.fleet), endpoint = redis.endpoint
            linkSecret.fetch(logger: logger) { try FleetSecret.resolve(environment: environment, redis: endpoint, keys: keys) }
            linkAuth = FleetSecret.auth(secret: { linkSecret.value })
        }

        // Limits: in Redis for a fleet (with a per-node fallback while Redis is down, its limits
        // divided by the live nodes last seen), else in this node's memory.
        let leaseTTL = UInt64(config.leaseTTLMs) * 1_000_000
        let admission: Admission? = try config.quota.map { q in
            guard let redis else { return LocalAdmission(quota: { _ in q }, leaseTTLNanos: leaseTTL) }
            let heartbeat = redis.heartbeat
            let fallback = LocalAdmission(quota: { _ in q.dividedAmong(heartbeat.liveNodes) }, leaseTTLNanos: leaseTTL)
            return try RedisAdmission(connection: redis.commands, scriptsDirectory: config.luaDir, defaults: q, leaseTTLNanos: leaseTTL,
                                      fallback: fallback)
        }

        // The worker side: pulls jobs while the node has free slots, from the fleet's queue and
        // (serve) from this process's memory, sharing the slots.
        var workers: [FleetWorker] = []
        let slots = WorkerSlots(slots: config.slots)
        if role.runsGenerations {
            if let redis, fleetMode {
                let w = FleetWorker(nodeID: nodeID, queue: redis.queue, relay: redis.relay, backend: backend, slots: slots,
                                    loops: group.loops, metrics: workerMetrics, logger: logger)
                w.links = linkAuth.map { LinkPool(nodeID: nodeID, auth: $0, logger: logger) }
                workers.append(w)
            }
            if let local {
                var wc = WorkerConfiguration()
                wc.keepaliveNanos = 0  // a worker in this process cannot go silent on its own
                workers.append(FleetWorker(nodeID: nodeID, queue: local, relay: local, backend: backend, slots: slots, loops: group.loops,
                                           metrics: workerMetrics, logger: logger, configuration: wc))
            }
            for w in workers {
                // Its gateway died mid-stream: nobody else will hand the lease back before its TTL.
                w.onAbandoned = { r in if r.fence != 0 { admission?.release(user: r.ownerID, requestID: r.requestID) } }
            }
            // Stopped after the gateway: they take no more jobs and finish those they run.
            let pullers = workers
            try services.start(ServiceHandle("workers", start: { for w in pullers { w.start() } }, stop: { deadline in
                for w in pullers { w.stop() }
                waitUntilIdle(deadline: deadline) { slots.whenIdle($0) }
            }))
        }
        if let proxy {
            try services.start(ServiceHandle("upstream warmups", start: { proxy.startWarmups(on: group.loops[0]) }, stop: { _ in proxy.stopWarmups() }))
            // A worker tells the fleet how its upstreams are doing (admin status reads it).
            if let redis {
                let publisher = StatusPublisher(connection: redis.commands, key: FleetKeys(fleet: config.fleet).upstreamsPrefix + nodeID) {
                    proxy.statusJSON()
                }
                try services.start(ServiceHandle("upstream status publisher", start: { publisher.start() }, stop: { _ in publisher.stop() }))
            }
        }
        // The gateway side: what the transports submit to.
        var linkServer: LinkServer?
        let completions: FleetCompletions? = role.servesAPI ? {
            let f: FleetCompletions
            if let redis, fleetMode {
                let heartbeat = redis.heartbeat
                let lane = FleetLane(queue: redis.queue, relay: redis.relay, remote: true, isUp: redis.isUp,
                                     hasWorkers: { heartbeat.liveWorkers.map { $0 > 0 } ?? true })
                f = FleetCompletions(nodeID: nodeID, lane: lane,
                                     fallback: local.map { .local($0) }, directory: redis.queue, metrics: metrics, logger: logger)
            } else {
                f = FleetCompletions(nodeID: nodeID, local: local!, metrics: metrics, logger: logger)
            }
            f.admission = admission
            if let local, fleetMode {
                // Local first: while this node has a free slot (not promised to a waiting job),
                // it runs the completion itself.
                f.localFirst = { slots.available > local.length }
            }
            return f
        }() : nil
        if let completions, let linkAuth {
            // Stopped after the listener drained: the streams still running need their links.
            let links = LinkServer(hub: completions, auth: linkAuth, logger: logger)
            let listener = try TCPServer(group: group, host: config.fleetHost, port: config.fleetPort) { links.accept($0) }
            let advertised = config.fleetAdvertise ?? (["0.0.0.0", "::", ""].contains(config.fleetHost) ? NodeIdentity.hostname : config.fleetHost)
            let address = CompletionWire.LinkAddress(host: advertised, port: listener.boundAddress.port, gateway: nodeID)
            linkSecret.whenKnown { completions.linkAddress = address }
            try services.start(ServiceHandle("stream links", stop: { _ in waitUntilIdle(deadline: .max) { listener.close(done: $0) } }))
            linkServer = links
            logger.info("stream links listening", ["address": "\(listener.boundAddress)", "advertised": "\(advertised):\(listener.boundAddress.port)"])
        }
        if let completions {
            try services.start(ServiceHandle("gateway relay", start: { completions.start() }, stop: { _ in }))
        }

        var proxyMetrics: (@Sendable () -> String)?
        if let proxy { proxyMetrics = { proxy.renderMetrics() } }
        if let links = linkServer {
            let before = proxyMetrics
            proxyMetrics = {
                var out = before?() ?? ""
                out += "# HELP playground_fleet_links Stream links from workers open on this gateway.\n# TYPE playground_fleet_links gauge\n"
                out += "playground_fleet_links \(links.openLinks)\n"
                out += "# HELP playground_fleet_links_refused_total Link connections refused (wrong secret or gateway, malformed, no hello in time).\n"
                out += "# TYPE playground_fleet_links_refused_total counter\nplayground_fleet_links_refused_total \(links.refusedLinks)\n"
                return out
            }
        }
        let router = Router()
        let sessions = SessionRegistry(tokenHash: { Credentials.hex(Credentials.sha256($0)) })
        if role.servesAPI {
            let authenticator: Authenticator = config.authEnabled && identities != nil ? StoreAuthenticator(store: identities!) : OpenAuthenticator()
            if !config.authEnabled { logger.warning("authentication is OFF: every caller is the same local user") }
            let api = APIRouter(authenticator: authenticator)
            let presets = pool.map { PresetAPI(store: PostgresPresetStorage(pool: $0), validator: PresetValidator(policy: policy), metrics: metrics, logger: logger) }
            if let presets, let redis, let url = config.databaseURL {
                // Presets and identities outlive a database outage through Redis (issue 9).
                let keys = PresetCacheKeys(namespace: PresetCacheKeys.namespace(forDatabaseURL: url))
                var cachePolicy = PresetCachePolicy()
                cachePolicy.maxQueuedPerUser = config.outboxMaxWrites
                cachePolicy.maxQueuedBytesPerUser = config.outboxMaxUserBytes
                cachePolicy.maxQueuedBytesTotal = config.outboxMaxTotalBytes
                let cache = try RedisPresetCache(connection: redis.commands, keys: keys, policy: cachePolicy, scriptsDirectory: config.luaDir)
                presets.cache = cache
                presets.outbox = cache
                presets.freshMs = config.presetCacheFreshSeconds * 1000
                identities?.shared = RedisIdentityCache(connection: redis.commands, keys: keys)
                let luaDir = config.luaDir, endpoint = redis.endpoint
                let r = OutboxReplayer(pool: pool!, owner: nodeID, logger: logger) {
                    try RedisOutboxDrain(redis: BlockingRedis(endpoint: endpoint, timeoutSeconds: 2), keys: keys, policy: cachePolicy,
                                         scriptsDirectory: luaDir)
                }
                r.onSettled = { [metrics] outcome in
                    if case .failed = outcome { metrics.presetWritesFailed.add(1, ordering: .relaxed) } else {
                        metrics.presetWritesReplayed.add(1, ordering: .relaxed)
                    }
                }
                if let identities { r.onPendingRevocations = { identities.setUnrecordedRevocations($0) } }
                try services.start(ServiceHandle("outbox replayer", start: { r.start() }, stop: { _ in r.stop() }))
            }
            presets?.install(on: api)
            CompletionAPI(completions: completions!, parser: CompletionRequestParser(policy: policy), metrics: metrics, models: models,
                          presets: presets, admission: admission).install(on: api)
            if let identities {
                // A revoked key or ended session closes its open sockets (1008) at once; a revoked
                // key also stops every generation it started, on any transport.
                identities.onRevocation = { [logger] r in
                    sessions.apply(r)
                    if case .key(let id) = r {
                        let n = completions?.cancelAll(keyID: id) ?? 0
                        logger.info("api key revoked", ["key_id": "\(id)", "generations_stopped": "\(n)"])
                    }
                }
                try services.start(ServiceHandle("identity listener", start: { identities.startListening() },
                                                 stop: { _ in identities.stopListening() }))
            }
            try Routes.install(on: router, config: config, api: api, completions: completions!, metrics: [metrics, workerMetrics], modelServer: modelServer,
                               identities: identities, sessions: sessions, redisUp: redis?.isUp, redisRefusesWrites: redis?.refusesWrites,
                               hasCapacity: { completions?.hasCapacity ?? true }, extraMetrics: proxyMetrics)
        } else {
            Routes.installOps(on: router, isDraining: { draining.load(ordering: .relaxed) }, metrics: [metrics, workerMetrics], redisUp: redis?.isUp,
                              redisRefusesWrites: redis?.refusesWrites, extraMetrics: proxyMetrics)
        }
        var http = HTTPServerConfiguration()
        http.requestReadTimeoutNanos = UInt64(config.requestReadTimeoutMs) * 1_000_000
        http.idleTimeoutNanos = UInt64(config.idleTimeoutMs) * 1_000_000
        http.sharePort = config.sharePort
        http.logger = logger
        let server = HTTPServer(router: router, configuration: http)
        // Tell WebSocket clients to go elsewhere (close 1001) once the gateway drained, and give
        // the frames a moment to leave.
        try services.start(ServiceHandle("websocket sessions", stop: { _ in
            sessions.closeAll(reason: "node shutting down")
            if sessions.count > 0 { usleep(200_000) }
        }))
        // The listener and the gateway stop first: refuse new completions (/readyz 503 tells the
        // load balancer), stop accepting, let the streams finish (their jobs may still be claimed
        // by this node's workers, which keep working until their own turn).
        let address = try server.start(group: group, host: config.host, port: config.port)
        try services.start(ServiceHandle("listener", start: { group.start() }, stop: { deadline in
            draining.store(true, ordering: .relaxed)
            completions?.beginDraining()
            waitUntilIdle(deadline: .max) { server.stopAccepting(done: $0) }
            if let completions { waitUntilIdle(deadline: deadline) { completions.whenIdle($0) } }
        }))
        logger.info(modelServer ? "model server started" : "node started", config.summary.merging([
            "role": role.rawValue, "node_id": nodeID, "url": "http://\(address)", "open_file_limit": "\(fdLimit)",
            "connection_capacity": "\(max(0, fdLimit - 64))", "model_vocabulary": "\(model.vocabularySize)",
            "services": services.running.joined(separator: ","),
        ]) { a, _ in a })
        // A machine-readable line for scripts that start a node on port 0.
        printLine("listening on http://\(address)")

        let sig = stopSignals.wait()
        let gatewayInFlight = { completions?.inFlight ?? 0 }
        logger.info("draining", ["signal": "\(sig)", "in_flight": "\(gatewayInFlight())"])
        services.stopAll(deadline: monotonicNanos() + UInt64(config.drainSeconds * 1e9))
        logger.info("stopped", ["unfinished": "\(gatewayInFlight() + slots.inFlight)"])
        return 0
    }

    /// Blocks until `register`'s callback runs or `deadline` (monotonic nanoseconds) passes:
    /// draining waits on a signal, it does not poll.
    static func waitUntilIdle(deadline: UInt64, _ register: (@escaping @Sendable () -> Void) -> Void) {
        let done = DispatchSemaphore(value: 0)
        register { done.signal() }
        let now = monotonicNanos()
        if deadline == .max { return done.wait() }
        _ = done.wait(timeout: .now() + .nanoseconds(Int(min(deadline > now ? deadline - now : 0, UInt64(Int.max)))))
    }
}

/// A node's Redis: three connections (commands, blocking claims, subscriptions), the queue, the
/// relay and the heartbeat.
struct FleetRedis {
    let endpoint: RedisEndpoint
    let commands: RedisClient
    let claims: RedisClient
    let subscriptions: RedisSubscriber
    let queue: RedisJobQueue
    let relay: RedisEventRelay
    let heartbeat: FleetHeartbeat

    init(endpoint: RedisEndpoint, group: EventLoopGroup, nodeID: String, role: NodeRole, config: NodeConfig, logger: Logger) throws {
        self.endpoint = endpoint
        let loops = group.loops
        commands = RedisClient(endpoint: endpoint, loop: loops[0], logger: logger)
        claims = RedisClient(endpoint: endpoint, loop: loops[loops.count > 1 ? 1 : 0], logger: logger)
        // The subscriber follows the claims client's slot map (same loop).
        subscriptions = RedisSubscriber(client: claims, logger: logger)
        for c in [commands, claims] {
            let box = UncheckedBox(c)
            c.loop.execute { box.value.start() }
        }
        let keys = FleetKeys(fleet: config.fleet, shards: config.jobShards)
        queue = try RedisJobQueue(connection: commands, claims: claims, scriptsDirectory: config.luaDir, maxBacklog: config.maxQueue, keys: keys)
        // The stream and its group are made by the first claim that finds them missing.
        relay = RedisEventRelay(publisher: commands, subscriber: subscriptions)
        heartbeat = try FleetHeartbeat(connection: commands, nodeID: nodeID, role: role.rawValue, keys: keys, scriptsDirectory: config.luaDir)
    }

    /// Whether the fleet path works now: commands and subscriptions both connected.
    var isUp: @Sendable () -> Bool {
        let c = UncheckedBox(commands), s = UncheckedBox(subscriptions)
        return { c.value.isUp && s.value.isUp }
    }

    /// Whether Redis answers but refused a write lately (out of memory, a failed snapshot).
    var refusesWrites: @Sendable () -> Bool {
        let c = UncheckedBox(commands)
        return { c.value.refusedWritesRecently() }
    }
}

/// A node's name in the fleet: host, pid and a random suffix (unique across restarts).
enum NodeIdentity {
    static var hostname: String {
        var buf = [UInt8](repeating: 0, count: 256)
        gethostname(&buf, 255)
        return String(decoding: buf.prefix { $0 != 0 }, as: UTF8.self)
    }

    static func make() -> String {
        let host = hostname
        let suffix = String(UInt32.random(in: 0...UInt32.max), radix: 36)
        return "\(host)-\(getpid())-\(suffix)"
    }
}

/// The fleet's link secret once known: read at start, or retried every second in the background
/// while Redis does not answer.
final class SecretHolder: @unchecked Sendable {
    private let state = Mutex<(secret: [UInt8]?, waiters: [@Sendable () -> Void])>((nil, []))
    var value: [UInt8]? { state.withLock { $0.secret } }

    func fetch(logger: Logger, _ attempt: @escaping @Sendable () throws -> [UInt8]) {
        if let s = try? attempt() { return set(s) }
        logger.warning("fleet secret not readable yet (Redis down?): tokens go through Redis until it is")
        DispatchQueue.global().async { [self] in
            while true {
                sleep(1)
                if let s = try? attempt() {
                    logger.info("fleet secret read: stream links on")
                    return set(s)
                }
            }
        }
    }

    private func set(_ secret: [UInt8]) {
        let waiters = state.withLock { s -> [@Sendable () -> Void] in
            s.secret = secret
            defer { s.waiters = [] }
            return s.waiters
        }
        for w in waiters { w() }
    }

    /// Runs `body` once the secret is known (at once if it is).
    func whenKnown(_ body: @escaping @Sendable () -> Void) {
        let now = state.withLock { s -> Bool in
            if s.secret != nil { return true }
            s.waiters.append(body)
            return false
        }
        if now { body() }
    }
}
