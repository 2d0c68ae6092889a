#if canImport(Glibc)
import Glibc
#endif

/// Where the project's folders are (Public/, sql/, lua/) when a command runs from anywhere.
public enum ProjectPaths {
    /// A project folder (Public/, sql/) next to the working directory, else next to the checkout
    /// the binary was built in.
    public static func directory(_ name: String, marker: String) -> String {
        var st = stat()
        if stat("\(name)/\(marker)", &st) == 0 { return name }
        var buf = [CChar](repeating: 0, count: 4096)
        let n = readlink("/proc/self/exe", &buf, 4095)
        if n > 0 {
            var path = String(decoding: buf[0..<n].map { UInt8(bitPattern: $0) }, as: UTF8.self)
            for _ in 0..<4 {
                guard let slash = path.lastIndex(of: "/") else { break }
                path = String(path[..<slash])
                if stat(path + "/\(name)/\(marker)", &st) == 0 { return path + "/" + name }
            }
        }
        return name
    }
}

/// A failure that is not the command line's fault (exit 1, not 2).
public struct OperationalError: Error, CustomStringConvertible {
    public let description: String
    public init(description: String) { self.description = description }
}
