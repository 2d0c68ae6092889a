import Runtime
#if canImport(Glibc)
import Glibc
#endif

/// Serves a directory of static files (the playground page) from memory. Files are read once at
/// start; only names found there are served, so no request path can reach outside it. Loading is
/// bounded and never leaves the folder: a symbolic link is served only when it points at a regular
/// file inside the folder; links to folders are not followed (no loops), FIFOs and devices are
/// skipped (reading one could block start-up), and the number of files, their bytes and the depth
/// are capped: past a cap the node refuses to start rather than serve half a page.
public final class StaticFiles: @unchecked Sendable {
    struct File {
        let body: [UInt8]
        let contentType: String
        let etag: String
    }

    public struct Limits: Sendable {
        public var maxFiles = 2_000
        public var maxTotalBytes = 64 << 20
        public var maxFileBytes = 16 << 20
        public var maxDepth = 16
        public init() {}
    }

    public struct LoadError: Error, CustomStringConvertible {
        public let description: String
    }

    private var files: [String: File] = [:]
    private var totalBytes = 0
    private let limits: Limits
    private let root: String
    public var count: Int { files.count }
    public func contains(_ path: String) -> Bool { files[path] != nil }

    public init(directory: String, limits: Limits = Limits()) throws(LoadError) {
        self.limits = limits
        guard let real = StaticFiles.realPath(directory) else { throw LoadError(description: "public folder \(directory) does not exist") }
        root = real
        try load(directory: real, prefix: "", depth: 0)
    }

    static func realPath(_ path: String) -> String? {
        guard let p = realpath(path, nil) else { return nil }
        defer { free(p) }
        return String(cString: p)
    }

    private func load(directory: String, prefix: String, depth: Int) throws(LoadError) {
        guard depth <= limits.maxDepth else { throw LoadError(description: "public folder nested deeper than \(limits.maxDepth) levels at \(directory)") }
        guard let dir = opendir(directory) else { return }
        defer { closedir(dir) }
        while let entry = readdir(dir) {
            let name = withUnsafeBytes(of: entry.pointee.d_name) { String(decoding: $0.prefix { $0 != 0 }, as: UTF8.self) }
            if name.hasPrefix(".") { continue }
            var full = directory + "/" + name
            var st = stat()
            guard lstat(full, &st) == 0 else { continue }
            if (st.st_mode & S_IFMT) == S_IFLNK {
                // Followed only to a regular file inside the folder.
                guard let target = StaticFiles.realPath(full), target.hasPrefix(root + "/"), stat(target, &st) == 0,
                      (st.st_mode & S_IFMT) == S_IFREG else { continue }
                full = target
            }
            switch st.st_mode & S_IFMT {
            case S_IFDIR:
                try load(directory: full, prefix: prefix + "/" + name, depth: depth + 1)
            case S_IFREG:
                guard files.count < limits.maxFiles else { throw LoadError(description: "public folder has more than \(limits.maxFiles) files") }
                guard Int(st.st_size) <= limits.maxFileBytes else {
                    throw LoadError(description: "public file \(full) is larger than \(limits.maxFileBytes) bytes")
                }
                guard let bytes = StaticFiles.readRegular(full, max: limits.maxFileBytes) else { continue }
                totalBytes += bytes.count
                guard totalBytes <= limits.maxTotalBytes else {
                    throw LoadError(description: "public folder holds more than \(limits.maxTotalBytes) bytes")
                }
                var h: UInt64 = 0xcbf2_9ce4_8422_2325
                for b in bytes { h = (h ^ UInt64(b)) &* 0x100_0000_01b3 }
                files[prefix + "/" + name] = File(body: bytes, contentType: StaticFiles.type(of: name), etag: "\"\(String(h, radix: 16))\"")
            default:
                continue  // FIFOs, sockets, devices
            }
        }
    }

    /// Reads a regular file, at most `max` bytes; nil if it is not one (checked on the open file,
    /// so a swap between the check and the read cannot slip a FIFO or a link in).
    static func readRegular(_ path: String, max: Int) -> [UInt8]? {
        let fd = open(path, O_RDONLY | O_NOFOLLOW | O_NONBLOCK | O_CLOEXEC)
        guard fd >= 0 else { return nil }
        defer { close(fd) }
        var st = stat()
        guard fstat(fd, &st) == 0, (st.st_mode & S_IFMT) == S_IFREG else { return nil }
        var out: [UInt8] = []
        var buf = [UInt8](repeating: 0, count: 65536)
        while out.count <= max {
            let n = read(fd, &buf, buf.count)
            if n <= 0 { break }
            out.append(contentsOf: buf[0..<n])
        }
        return out.count <= max ? out : nil
    }

    static func type(of name: String) -> String {
        switch name.split(separator: ".").last.map(String.init) ?? "" {
        case "html": return "text/html; charset=utf-8"
        case "css": return "text/css; charset=utf-8"
        case "js": return "text/javascript; charset=utf-8"
        case "json": return "application/json"
        case "svg": return "image/svg+xml"
        case "png": return "image/png"
        case "ico": return "image/x-icon"
        case "txt": return "text/plain; charset=utf-8"
        default: return "application/octet-stream"
        }
    }

    /// Answers GET/HEAD for a known file ("/" is index.html); false when the path is not one.
    public func serve(_ req: HTTPRequest, _ r: HTTPResponder) -> Bool {
        guard req.method == "GET" || req.method == "HEAD" else { return false }
        let path = req.path == "/" ? "/index.html" : String(req.path)
        guard let f = files[path] else { return false }
        var h = HTTPHeaders()
        h.add("Content-Type", f.contentType)
        h.add("ETag", f.etag)
        h.add("Cache-Control", "no-cache")
        h.add("X-Content-Type-Options", "nosniff")
        if path == "/index.html" {
            h.add("Content-Security-Policy", "default-src 'self'; connect-src 'self' ws: wss:; img-src 'self' data:; style-src 'self'; script-src 'self'; frame-ancestors 'none'")
            h.add("X-Frame-Options", "DENY")
            h.add("Referrer-Policy", "no-referrer")
        }
        if req.headers.first("if-none-match") == f.etag {
            r.send(status: 304, headers: h)
            return true
        }
        r.send(status: 200, headers: h, body: f.body)
        return true
    }
}
