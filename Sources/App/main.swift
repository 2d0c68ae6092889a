import BenchTools
import Runtime
#if canImport(Glibc)
import Glibc
#endif

// A benchmark's node or client process dies with the benchmark, however it ends.
ParentDeath.followParentIfAsked()
let argv = Array(CommandLine.arguments.dropFirst())
let code = Command.run(argv)
// A benchmark being stopped by a signal: its handler reaps the children and exits 128+signal.
while BenchSupport.stoppingSignal.load(ordering: .acquiring) != 0 { pause() }
// Leave without running library destructors (libpq, OpenSSL) under threads that may still be
// running when a command fails half-way (a node that could not start); output is flushed first.
fflush(nil)  // every stdio stream
_exit(code)
