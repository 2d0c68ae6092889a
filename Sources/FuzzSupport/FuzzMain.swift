// The shared entry of the libFuzzer targets. Built with -DFUZZING (scripts/fuzz.sh), Swift's main
// runs libFuzzer's driver on the target's check; otherwise the target replays the files it is given
// (the committed seed corpus), so the same checks run in an ordinary build.
import Glibc
import Runtime
#if FUZZING
import CFuzz
#endif

nonisolated(unsafe) private var target: (([UInt8]) -> Void)?

// libFuzzer's own main (linked in by -sanitize=fuzzer, never run) needs this symbol to exist.
@_cdecl("LLVMFuzzerTestOneInput")
public func fuzzTestOneInput(_ data: UnsafePointer<UInt8>?, _ size: Int) -> Int32 {
    target?(size == 0 || data == nil ? [] : Array(UnsafeBufferPointer(start: data, count: size)))
    return 0
}

public func fuzzMain(_ check: @escaping ([UInt8]) -> Void) -> Never {
    target = check
    #if FUZZING
    var argc = CommandLine.argc
    var argv: UnsafeMutablePointer<UnsafeMutablePointer<CChar>?>? = CommandLine.unsafeArgv
    exit(LLVMFuzzerRunDriver(&argc, &argv) { data, size in fuzzTestOneInput(data, size) })
    #else
    for path in CommandLine.arguments.dropFirst() {
        if let bytes = Files.read(path) { check(bytes) }
    }
    printLine("replayed \(CommandLine.arguments.count - 1) inputs")
    exit(0)
    #endif
}
