import Runtime
#if canImport(Glibc)
import Glibc
#endif

// A benchmark's node or client process dies with the benchmark, however it ends.
ParentDeath.followParentIfAsked()
let argv = Array(CommandLine.arguments.dropFirst())
let code = Command.run(argv)
// Leave without running library destructors (libpq, OpenSSL) under threads that may still be
// running when a command fails half-way (a node that could not start); output is flushed first.
fflush(nil)  // every stdio stream
_exit(code)
