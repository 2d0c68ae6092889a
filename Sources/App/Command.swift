import BenchTools
import Runtime
#if canImport(Glibc)
import Glibc
#endif

/// The composition root: parses the subcommand and wires the modules together.
enum Command {
    static let usage = """
    usage: playground <command> [flags]      (playground <command> --help lists its flags)

    commands:
      serve          run a node (HTTP/1.1 + WebSocket, the page, the API, generations) until SIGTERM/SIGINT
      gateway        run a gateway: transports, identity, admission, enqueue, relay (needs Redis)
      worker         run a worker: pulls jobs from Redis while it has free slots, runs them
      migrate        apply sql/NNN_*.sql in order (also done at start); needs DATABASE_URL
      admin keys     create --user U [--org O] | list [--user U] | revoke ID|PREFIX | check --key K
      model-server   serve the built-in model over the OpenAI-compatible API, with fault knobs
      bench          completions benchmark: WebSocket at a fixed rate and flat out, and SSE
      bench-ws       WebSocket load generator (see docs/BENCHMARKS.md)
      bench-streams  one client process of the 100k-stream proof (scripts/bench-100k.py)
      bench-presets  preset search latency on a seeded database (scripts/bench-presets.sh)
      bench-admission  admission decisions/s: lua/admit.lua on Redis vs in memory
      bench-preset-cache  preset load by id: Redis cache vs PostgreSQL; outbox replay rate
      help           this text

    Every flag can also be set as an environment variable: --port → PLAYGROUND_PORT.

    """

    static func run(_ argv: [String]) -> Int32 {
        guard let sub = argv.first else {
            printError(usage)
            return 2
        }
        let rest = Array(argv.dropFirst())
        do {
            switch sub {
            case "serve", "gateway", "worker", "model-server":
                let role = NodeRole(rawValue: sub)!
                return try ServeCommand.run(Arguments(rest, spec: NodeConfig.spec(role)), role: role)
            case "bench-ws": return try BenchWSCommand.run(Arguments(rest, spec: BenchWSCommand.spec))
            case "bench-streams": return try BenchStreamsCommand.run(Arguments(rest, spec: BenchStreamsCommand.spec))
            case "bench": return try BenchCommand.run(Arguments(rest, spec: BenchCommand.spec))
            case "migrate": return try AdminCommand.migrate(Arguments(rest, spec: AdminCommand.migrateSpec))
            case "bench-presets": return try BenchPresetsCommand.run(Arguments(rest, spec: BenchPresetsCommand.spec))
            case "bench-admission": return try BenchAdmissionCommand.run(Arguments(rest, spec: BenchAdmissionCommand.spec))
            case "bench-preset-cache": return try BenchPresetCacheCommand.run(Arguments(rest, spec: BenchPresetCacheCommand.spec))
            case "admin": return try AdminCommand.run(Arguments(rest, spec: AdminCommand.spec))
            case "help", "--help", "-h":
                print(usage)
                return 0
            default:
                printError("unknown command '\(sub)'\n\(usage)")
                return 2
            }
        } catch let e as ArgumentError {
            if let help = e.help {
                print(help, terminator: "")
                return 0
            }
            printError("error: \(e.message)")
            return 2
        } catch {
            printError("error: \(error)")
            return 1
        }
    }
}
