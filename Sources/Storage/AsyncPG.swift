// libpq's non-blocking API driven by an event loop: the alternative to the thread pool, kept to
// measure the two against each other (`playground bench-presets --compare-pools`). The product
// uses PGPool; see docs/ARCHITECTURE.md for why.
internal import CLibpq
internal import CLinux
#if canImport(Glibc)
import Glibc
#endif
import NetCore

/// One connection whose socket is watched by `loop`; queries queue and run one at a time.
/// Loop-confined. A broken connection fails its queries; it does not reconnect (bench use only).
public final class LoopPGConnection: Pollable {
    public let loop: EventLoop
    private var conn: OpaquePointer?
    private let fd: Int32
    private struct Query {
        let sql: String
        let params: [String?]
        let done: (Result<PGRows, PGError>) -> Void
    }
    private var queue: [Query] = []
    private var current: Query?
    private var result: Result<PGRows, PGError>?

    /// Connects (blocking; do it before the loop is busy), then switches to non-blocking mode.
    public init(url: String, loop: EventLoop) throws(PGError) {
        let c = try PGConnection(url: url)
        try c.query("SET pg_trgm.word_similarity_threshold = 0.4")
        guard let h = c.detachHandle() else { throw PGError(kind: .connection, sqlState: nil, message: "no handle") }
        conn = h
        fd = PQsocket(h)
        self.loop = loop
        PQsetnonblocking(h, 1)
    }

    /// Registers the socket with the loop (call on the loop).
    public func start() throws(SystemError) {
        try loop.register(fd: fd, self, events: EPOLLIN.rawValue)
    }

    deinit { if let conn { PQfinish(conn) } }

    /// Statements queued or running here (to pick the least-loaded connection).
    public var load: Int { queue.count + (current == nil ? 0 : 1) }

    /// Queues a statement; `done` runs on the loop.
    public func query(_ sql: String, _ params: [String?], done: @escaping (Result<PGRows, PGError>) -> Void) {
        queue.append(Query(sql: sql, params: params, done: done))
        if current == nil { sendNext() }
    }

    private func sendNext() {
        guard current == nil, !queue.isEmpty, let conn else { return }
        let q = queue.removeFirst()
        current = q
        result = nil
        let cStrings: [UnsafeMutablePointer<CChar>?] = q.params.map { $0.map { strdup($0) } ?? nil }
        defer { for p in cStrings { free(p) } }
        let ok = cStrings.withUnsafeBufferPointer { buf in
            buf.baseAddress!.withMemoryRebound(to: UnsafePointer<CChar>?.self, capacity: max(1, q.params.count)) { p in
                PQsendQueryParams(conn, q.sql, Int32(q.params.count), nil, q.params.isEmpty ? nil : p, nil, nil, 0)
            }
        }
        guard ok == 1 else { return finishCurrent(.failure(PGError(kind: .connection, sqlState: nil, message: String(cString: PQerrorMessage(conn))))) }
        // Small statements fit the socket buffer; if not, write the rest when it is writable.
        if PQflush(conn) == 1 { try? loop.modify(fd: fd, events: EPOLLIN.rawValue | EPOLLOUT.rawValue) }
    }

    public func handleEvents(_ events: UInt32) {
        guard let conn else { return }
        if events & EPOLLOUT.rawValue != 0, PQflush(conn) == 0 {
            try? loop.modify(fd: fd, events: EPOLLIN.rawValue)
        }
        guard events & (EPOLLIN.rawValue | EPOLLERR.rawValue | EPOLLHUP.rawValue) != 0 else { return }
        guard PQconsumeInput(conn) == 1 else {
            return finishCurrent(.failure(PGError(kind: .connection, sqlState: nil, message: String(cString: PQerrorMessage(conn)))))
        }
        while current != nil, PQisBusy(conn) == 0 {
            guard let r = PQgetResult(conn) else {
                finishCurrent(result ?? .failure(PGError(kind: .query, sqlState: nil, message: "no result")))
                continue
            }
            do throws(PGError) { result = .success(try PGConnection.rows(from: r, conn: conn)) } catch { result = .failure(error) }
        }
    }

    private func finishCurrent(_ r: Result<PGRows, PGError>) {
        guard let q = current else { return }
        current = nil
        q.done(r)
        sendNext()
    }
}
