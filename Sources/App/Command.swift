import Runtime
#if canImport(Glibc)
import Glibc
#endif

/// The composition root: parses the subcommand and wires the modules together.
enum Command {
    static let usage = """
    usage: playground <command> [flags]

    commands:
      serve        run a node (HTTP/1.1 + WebSocket) until SIGTERM/SIGINT
                   --host 127.0.0.1 --port 8080 --loops <cores> --conformance-echo
                   --allowed-origins a,b --log-level info --slots 256 --max-queue 1024
                   --max-tokens-cap 2048 --model-ttft-ms 150 --model-token-ms 30
                   --database-url URL (or DATABASE_URL) --auth keys|off
      migrate      apply sql/NNN_*.sql in order (also done at start); needs DATABASE_URL
      admin keys create --user U [--org O]   print a new API key once (only its hash is stored)
      admin keys list [--user U] | revoke ID|PREFIX | check --key K
      model-server serve the built-in model over the OpenAI-compatible API, with fault knobs
                   --port 9090 --model-ttft-ms 150 --tokens-per-second 33 --model-jitter 0.2
                   --error-rate 0 --midstream-failure-rate 0 --stall-rate 0
      bench        completions benchmark: WebSocket at a fixed rate and flat out, and SSE
                   --rate 1000 --duration 8 --connections 64 --window 8 --phases rate,max,sse
      bench-ws     WebSocket load generator (see docs/BENCHMARKS.md)
      bench-presets  preset search latency on a seeded database (scripts/bench-presets.sh)
      help         this text

    Every flag can also be set as an environment variable: --port → PLAYGROUND_PORT.
    """

    static func run(_ argv: [String]) -> Int32 {
        guard let sub = argv.first else {
            print(usage)
            return 2
        }
        let rest = Array(argv.dropFirst())
        do {
            let args = try Arguments(rest)
            switch sub {
            case "serve": return try ServeCommand.run(args)
            case "model-server": return try ServeCommand.run(args, modelServer: true)
            case "bench-ws": return try BenchWSCommand.run(args)
            case "bench": return try BenchCommand.run(args)
            case "migrate": return try AdminCommand.migrate(args)
            case "bench-presets": return try BenchPresetsCommand.run(args)
            case "admin": return try AdminCommand.run(args)
            case "help", "--help", "-h":
                print(usage)
                return 0
            default:
                printError("unknown command '\(sub)'\n\(usage)")
                return 2
            }
        } catch let e as ArgumentError {
            printError("error: \(e.message)")
            return 2
        } catch {
            printError("error: \(error)")
            return 1
        }
    }
}
