import Runtime
#if canImport(Glibc)
import Glibc
#endif

let argv = Array(CommandLine.arguments.dropFirst())
exit(Command.run(argv))
