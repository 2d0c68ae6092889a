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
        .systemLibrary(name: "CCrypto", path: "Sources/CCrypto", pkgConfig: "libcrypto",
                       providers: [.apt(["libssl-dev"])]),
        .target(name: "CFuzz", path: "Sources/CFuzz"),

        // Logger, config helpers, signals, clock. Knows no network.
        .target(name: "Runtime", dependencies: ["CLinux"]),
        // Syscalls, epoll, event loop, sockets, buffers, timers.
        .target(name: "NetCore", dependencies: ["CLinux", "Runtime"]),
        // Pure HTTP/1.1 parser + encoder, server connection, router, SSE.
        .target(name: "HTTP1", dependencies: ["NetCore", "Runtime"]),
        // Pure RFC 6455 codec + connection state machine; upgrade handshake.
        .target(name: "WebSocket", dependencies: ["NetCore", "HTTP1", "CCrypto"]),
        // The executable: subcommands, config, wiring. The only composition root.
        .executableTarget(name: "App", dependencies: ["Runtime", "NetCore", "HTTP1", "WebSocket"],
                          path: "Sources/App"),

        // libFuzzer entry points (built with -sanitize=fuzzer -DFUZZING; see scripts/fuzz.sh).
        .executableTarget(name: "FuzzHTTP", dependencies: ["HTTP1", "CFuzz"]),
        .executableTarget(name: "FuzzWebSocket", dependencies: ["WebSocket", "CFuzz"]),

        .testTarget(name: "NetCoreTests", dependencies: ["NetCore"]),
        .testTarget(name: "HTTP1Tests", dependencies: ["HTTP1", "NetCore"]),
        .testTarget(name: "WebSocketTests", dependencies: ["WebSocket", "HTTP1", "NetCore"]),
    ]
)
