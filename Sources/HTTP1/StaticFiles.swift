import Runtime
#if canImport(Glibc)
import Glibc
#endif

/// Serves a directory of static files (the playground page) from memory. Files are read once at
/// start; only names that exist there are served, so no request path can reach outside it.
public final class StaticFiles: @unchecked Sendable {
    struct File {
        let body: [UInt8]
        let contentType: String
        let etag: String
    }

    private var files: [String: File] = [:]
    public var count: Int { files.count }

    public init(directory: String) {
        load(directory: directory, prefix: "")
    }

    private func load(directory: String, prefix: String) {
        guard let dir = opendir(directory) else { return }
        defer { closedir(dir) }
        while let entry = readdir(dir) {
            let name = withUnsafeBytes(of: entry.pointee.d_name) { String(decoding: $0.prefix { $0 != 0 }, as: UTF8.self) }
            if name.hasPrefix(".") { continue }
            let full = directory + "/" + name
            var st = stat()
            guard stat(full, &st) == 0 else { continue }
            if (st.st_mode & S_IFMT) == S_IFDIR {
                load(directory: full, prefix: prefix + "/" + name)
            } else if let bytes = Files.read(full) {
                var h: UInt64 = 0xcbf2_9ce4_8422_2325
                for b in bytes { h = (h ^ UInt64(b)) &* 0x100_0000_01b3 }
                files[prefix + "/" + name] = File(body: bytes, contentType: StaticFiles.type(of: name), etag: "\"\(String(h, radix: 16))\"")
            }
        }
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
