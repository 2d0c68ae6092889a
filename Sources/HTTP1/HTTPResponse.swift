import NetCore
#if canImport(Glibc)
import Glibc
#endif

/// Serialises response heads. Pure: returns bytes.
public enum HTTPResponseEncoder {
    public static func head(status: Int, headers: HTTPHeaders, contentLength: Int?, chunked: Bool,
                            keepAlive: Bool, date: String) -> [UInt8] {
        var s = "HTTP/1.1 \(status) \(HTTPStatus.reason(status))\r\n"
        for (name, value) in headers.fields {
            s += name
            s += ": "
            s += value
            s += "\r\n"
        }
        if headers.first("date") == nil { s += "Date: \(date)\r\n" }
        // Safe defaults on every answer: API answers (JSON, SSE, errors) carry user data and must
        // not be cached or sniffed as another type; a handler that wants caching says so itself.
        if status >= 200 {
            if headers.first("cache-control") == nil { s += "Cache-Control: no-store\r\n" }
            if headers.first("x-content-type-options") == nil { s += "X-Content-Type-Options: nosniff\r\n" }
        }
        if let contentLength { s += "Content-Length: \(contentLength)\r\n" }
        if chunked { s += "Transfer-Encoding: chunked\r\n" }
        if !keepAlive && headers.first("connection") == nil { s += "Connection: close\r\n" }
        s += "\r\n"
        return Array(s.utf8)
    }

    /// One chunk: hex size, CRLF, data, CRLF (RFC 9112 §7.1).
    public static func chunk(_ data: UnsafeRawBufferPointer, into out: inout [UInt8]) {
        appendHex(data.count, to: &out)
        out.append(13); out.append(10)
        out.append(contentsOf: data)
        out.append(13); out.append(10)
    }

    static func appendHex(_ v: Int, to out: inout [UInt8]) {
        if v == 0 { out.append(48); return }
        var digits: (UInt8, UInt8, UInt8, UInt8, UInt8, UInt8, UInt8, UInt8, UInt8, UInt8, UInt8, UInt8, UInt8, UInt8, UInt8, UInt8) =
            (0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0)
        var n = 0
        var x = v
        withUnsafeMutableBytes(of: &digits) { d in
            while x > 0 {
                let h = UInt8(x & 15)
                d[n] = h < 10 ? 48 + h : 87 + h
                n += 1
                x >>= 4
            }
            while n > 0 { n -= 1; out.append(d[n]) }
        }
    }
}

/// An IMF-fixdate for the Date header, recomputed at most once a second per thread.
public enum HTTPDate {
    private static let days = ["Sun", "Mon", "Tue", "Wed", "Thu", "Fri", "Sat"]
    private static let months = ["Jan", "Feb", "Mar", "Apr", "May", "Jun", "Jul", "Aug", "Sep", "Oct", "Nov", "Dec"]

    public static func format(epochSeconds: Int) -> String {
        var t = time_t(epochSeconds)
        var tm = Glibc.tm()
        gmtime_r(&t, &tm)
        func two(_ v: Int32) -> String { v < 10 ? "0\(v)" : "\(v)" }
        return "\(days[Int(tm.tm_wday)]), \(two(tm.tm_mday)) \(months[Int(tm.tm_mon)]) \(tm.tm_year + 1900) \(two(tm.tm_hour)):\(two(tm.tm_min)):\(two(tm.tm_sec)) GMT"
    }
}

/// Per-loop cache of the current Date header value.
final class DateCache {
    private var second = -1
    private var value = ""
    func current() -> String {
        let s = Int(time(nil))
        if s != second { second = s; value = HTTPDate.format(epochSeconds: s) }
        return value
    }
}
