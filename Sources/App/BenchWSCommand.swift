import Runtime
enum BenchWSCommand {
    static func run(_ args: Arguments) throws -> Int32 { print("not yet"); return 1 }
}
