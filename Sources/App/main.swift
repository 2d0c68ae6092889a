import Runtime
#if canImport(Glibc)
import Glibc
#endif

// A benchmark's node or client process dies with the benchmark, however it ends.
ParentDeath.followParentIfAsked()
let argv = Array(CommandLine.arguments.dropFirst())
exit(Command.run(argv))
