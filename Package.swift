// swift-tools-version:6.0
// Playground: no Swift package dependencies by design. C libraries come in through system-library
// targets (libcrypto now; hiredis and libpq join them as their modules land).
import PackageDescription

let package = Package(
    name: "playground",
    platforms: [.macOS(.v14)],
    products: [
        .executable(name: "playground", targets: ["App"]),
    ],
    targets: [
        // Headers and link flags only.
        .target(name: "CLinux", path: "Sources/CLinux"),
        .target(name: "CFuzz", path: "Sources/CFuzz"),
        .systemLibrary(name: "CLibpq", path: "Sources/CLibpq", pkgConfig: "libpq", providers: [.apt(["libpq-dev"])]),
        .systemLibrary(name: "CHiredis", path: "Sources/CHiredis", providers: [.apt(["libhiredis-dev"])]),
        .systemLibrary(name: "CCrypto", path: "Sources/CCrypto", pkgConfig: "libcrypto",
                       providers: [.apt(["libssl-dev"])]),
        // TLS to upstream model servers (the model proxy's HTTP client).
        .systemLibrary(name: "CSSL", path: "Sources/CSSL", pkgConfig: "libssl", providers: [.apt(["libssl-dev"])]),
        .target(name: "TLS", dependencies: ["CSSL"]),

        // Logger, config helpers, signals, clock. Knows no network.
        .target(name: "Runtime", dependencies: ["CLinux"]),
        // Syscalls, epoll, event loop, sockets, buffers, timers.
        .target(name: "NetCore", dependencies: ["CLinux", "Runtime"]),
        // Strict JSON parser and allocation-light writer. Pure; knows nothing else.
        .target(name: "JSON"),
        // Requests, parameters and their validation, events, errors. Knows no C module, no I/O.
        .target(name: "Domain", dependencies: ["JSON", "Runtime"]),
        // What both sides of the completion engine share, below them: the model port (needs a
        // loop), the subscriber port, the relay publisher, the node's metrics, and the fleet in this
        // process's memory (queue, relay, directory).
        .target(name: "FleetCore", dependencies: ["Domain", "JSON", "NetCore", "Runtime"]),
        // The models behind the completions API, push-based (ModelBackend): the built-in n-gram
        // model, and the proxy to upstream model servers (aliases, breakers, hedging, warmups).
        .target(name: "Models", dependencies: ["Domain", "FleetCore", "NetCore", "Runtime", "HTTP1", "JSON", "TLS"]),
        // The engine's gateway side: the stream hub (registry, leases, replay, attach, deadlines)
        // over the fleet's ports, the transport-neutral API routes and their HTTP/SSE and
        // WebSocket-envelope transports.
        .target(name: "Gateway", dependencies: ["Domain", "FleetCore", "JSON", "NetCore", "HTTP1", "WebSocket", "Runtime"]),
        // The engine's worker side: slots (a pure table), one run per generation, the puller of
        // a queue. Knows the queue, relay and model ports; not Redis, not the gateway.
        .target(name: "Worker", dependencies: ["Domain", "FleetCore", "NetCore", "Runtime"]),
        // All SQL (PostgreSQL through libpq): the connection pool (one thread per connection),
        // migrations, API keys and sessions (IdentityDirectory), presets (PresetStorage), the
        // outbox replayer, the admin CLI's key commands.
        .target(name: "Storage", dependencies: ["CLibpq", "CCrypto", "CLinux", "Domain", "JSON", "NetCore", "Runtime"]),
        // Redis on the event loop (hiredis through its adapter hooks), scripts, and the fleet's
        // coordination on it: admission (limits) now; the job queue and token relay join here.
        .target(name: "RedisCoordination", dependencies: ["CHiredis", "CCrypto", "Domain", "FleetCore", "NetCore", "Runtime"]),
        // Pure HTTP/1.1 parser + encoder, server connection, router, SSE.
        .target(name: "HTTP1", dependencies: ["NetCore", "Runtime", "TLS"]),
        // Pure RFC 6455 codec + connection state machine; upgrade handshake.
        .target(name: "WebSocket", dependencies: ["NetCore", "HTTP1", "CCrypto"]),
        // Test-only routes compiled into the node behind --conformance-echo (Autobahn, framing tests).
        .target(name: "Conformance", dependencies: ["HTTP1", "WebSocket", "NetCore"]),
        // Load generators and benchmarks (bench, bench-ws, bench-presets, bench-admission).
        .target(name: "BenchTools", dependencies: ["Runtime", "NetCore", "HTTP1", "WebSocket", "Domain", "FleetCore", "Gateway", "Models", "JSON",
                                                   "Storage", "RedisCoordination"]),
        // The executable: subcommands, config, wiring. The only composition root.
        .executableTarget(name: "App", dependencies: ["Runtime", "NetCore", "HTTP1", "WebSocket", "Conformance", "FleetCore", "Gateway", "Domain", "Models", "JSON", "Storage", "RedisCoordination", "BenchTools", "Worker"],
                          path: "Sources/App"),

        // libFuzzer entry points (built with -sanitize=fuzzer -DFUZZING; see scripts/fuzz.sh).
        .target(name: "FuzzSupport", dependencies: ["CFuzz", "Runtime"]),
        .executableTarget(name: "FuzzHTTP", dependencies: ["HTTP1", "NetCore", "FuzzSupport"]),
        .executableTarget(name: "FuzzWebSocket", dependencies: ["WebSocket", "FuzzSupport"]),
        .executableTarget(name: "FuzzJSON", dependencies: ["JSON", "FuzzSupport"]),
        .executableTarget(name: "FuzzEnvelope", dependencies: ["Domain", "JSON", "FuzzSupport"]),
        .executableTarget(name: "FuzzUpstream", dependencies: ["HTTP1", "FuzzSupport"]),
        .executableTarget(name: "FuzzLink", dependencies: ["FleetCore", "Domain", "FuzzSupport"]),

        // Blocking test clients, the request corpus and an in-process server on port 0.
        .target(name: "TestSupport", dependencies: ["NetCore", "HTTP1", "WebSocket", "Runtime", "Conformance", "Domain", "JSON", "FleetCore", "Gateway",
                                                    "Worker", "Models"], path: "Tests/TestSupport"),
        .testTarget(name: "DomainTests", dependencies: ["Domain", "JSON"]),
        .testTarget(name: "FleetCoreTests", dependencies: ["FleetCore", "Domain", "JSON"]),
        .testTarget(name: "StorageTests", dependencies: ["Storage", "Domain"]),
        .testTarget(name: "RedisCoordinationTests", dependencies: ["RedisCoordination", "Domain", "NetCore", "Runtime"]),
        .testTarget(name: "GatewayTests", dependencies: ["Gateway", "FleetCore", "Domain", "Models", "NetCore", "Runtime", "TestSupport"]),
        .testTarget(name: "WorkerTests", dependencies: ["Worker", "Gateway", "FleetCore", "Domain", "Models", "NetCore", "Runtime", "TestSupport"]),
        .testTarget(name: "ModelsTests", dependencies: ["Models", "FleetCore", "Domain", "NetCore", "Runtime", "TLS", "HTTP1", "TestSupport"]),
        .testTarget(name: "NetCoreTests", dependencies: ["NetCore", "Runtime"]),
        .testTarget(name: "HTTP1Tests", dependencies: ["HTTP1", "NetCore", "Runtime", "TestSupport"]),
        .testTarget(name: "WebSocketTests", dependencies: ["WebSocket", "HTTP1", "NetCore", "Runtime", "TestSupport"]),
    ]
)
