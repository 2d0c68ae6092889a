// The only file that touches libpq. A `PGConnection` is used by one thread at a time.
internal import CLibpq
import Runtime
#if canImport(Glibc)
import Glibc
#endif

/// A database failure. `description` is for logs; clients get a mapped APIError instead.
public struct PGError: Error, CustomStringConvertible, Sendable {
    /// `connection`/`unavailable`: the database could not be reached (retry later). `query`: it
    /// answered with an error. `invalidInput`: a value was refused before it was sent.
    public enum Kind: Sendable { case connection, query, unavailable, invalidInput }
    public let kind: Kind
    public let sqlState: String?
    public let message: String
    public var description: String { "\(kind) \(sqlState ?? "-"): \(message)" }
    public var isUniqueViolation: Bool { sqlState == "23505" }
    /// The data was at fault, not the database (SQLSTATE class 22, or refused before sending):
    /// the same request would fail again, so it must not be answered with a retry hint.
    public var isDataError: Bool { kind == .invalidInput || (kind == .query && sqlState?.hasPrefix("22") == true) }
    /// Whether the database was unreachable, as opposed to answering with an error.
    public var isUnavailable: Bool { kind == .connection || kind == .unavailable }
}

/// Rows of a result, as text (libpq's text format), NULL as nil.
public struct PGRows: Sendable {
    public let columns: [String]
    public let rows: [[String?]]
    public let affected: Int
    public var count: Int { rows.count }
}

public final class PGConnection {
    private var conn: OpaquePointer?
    public let url: String
    /// How long one statement may take before the connection is given up (client side).
    public var queryTimeoutMs: Int

    public init(url: String, connectTimeoutSeconds: Int = 3, queryTimeoutMs: Int = 3000) throws(PGError) {
        self.url = url
        self.queryTimeoutMs = queryTimeoutMs
        let sep = url.contains("?") ? "&" : "?"
        let full = url.hasPrefix("postgres") ? url + sep + "connect_timeout=\(connectTimeoutSeconds)&application_name=playground" : url
        conn = PQconnectdb(full)
        guard let conn, PQstatus(conn) == CONNECTION_OK else {
            let msg = conn.map { String(cString: PQerrorMessage($0)) } ?? "out of memory"
            if let c = conn { PQfinish(c) }
            self.conn = nil
            throw PGError(kind: .connection, sqlState: nil, message: msg.trimmingNewline())
        }
        // Notices ("already exists, skipping") are not errors and would go to stderr otherwise.
        _ = try? query("SET client_min_messages = warning")
    }

    deinit { if let conn { PQfinish(conn) } }

    /// The raw handle, for the loop-driven variant in AsyncPG.swift (same module, same rules).
    var handle: OpaquePointer? { conn }

    /// Gives the handle away (the caller now owns and finishes it).
    func detachHandle() -> OpaquePointer? {
        let c = conn
        conn = nil
        return c
    }

    public var isHealthy: Bool { conn.map { PQstatus($0) == CONNECTION_OK } ?? false }

    /// Runs one statement with bound parameters ($1, $2, …), text format. Never interpolates values.
    @discardableResult
    public func query(_ sql: String, _ params: [String?] = []) throws(PGError) -> PGRows {
        guard let conn else { throw PGError(kind: .connection, sqlState: nil, message: "not connected") }
        // Parameters travel as C strings: a NUL would silently cut the value short.
        if let i = params.firstIndex(where: { $0?.utf8.contains(0) == true }) {
            throw PGError(kind: .invalidInput, sqlState: "22021", message: "parameter $\(i + 1) contains a NUL byte")
        }
        // Keep the C strings alive for the call.
        let cStrings: [UnsafeMutablePointer<CChar>?] = params.map { $0.map { strdup($0) } ?? nil }
        defer { for p in cStrings { free(p) } }
        let sent: Int32 = cStrings.withUnsafeBufferPointer { buf in
            buf.baseAddress!.withMemoryRebound(to: UnsafePointer<CChar>?.self, capacity: max(1, params.count)) { p in
                PQsendQueryParams(conn, sql, Int32(params.count), nil, params.isEmpty ? nil : p, nil, nil, 0)
            }
        }
        guard sent == 1 else { throw lost(String(cString: PQerrorMessage(conn)).trimmingNewline()) }
        return try awaitResult(timeoutMs: queryTimeoutMs)
    }

    /// Runs a script of several statements (migrations). No parameters.
    public func execute(_ script: String) throws(PGError) {
        guard let conn else { throw PGError(kind: .connection, sqlState: nil, message: "not connected") }
        guard PQsendQuery(conn, script) == 1 else { throw lost(String(cString: PQerrorMessage(conn)).trimmingNewline()) }
        _ = try awaitResult(timeoutMs: max(queryTimeoutMs, 60_000))
    }

    /// Waits for every result of the statement sent, at most `timeoutMs`. The clock is ours, not
    /// the server's: a database that stopped answering (paused, partitioned, a full disk) does not
    /// hang the calling thread. On timeout the connection is closed (what it was doing is
    /// abandoned; a new one is needed) and the error is a connection error.
    private func awaitResult(timeoutMs: Int) throws(PGError) -> PGRows {
        guard let conn else { throw PGError(kind: .connection, sqlState: nil, message: "not connected") }
        let deadline = monotonicNanos() + UInt64(timeoutMs) * 1_000_000
        var first: Result<PGRows, PGError>?
        while true {
            while PQisBusy(conn) == 0 {
                guard let result = PQgetResult(conn) else {
                    return try (first ?? .failure(PGError(kind: .query, sqlState: nil, message: "no result"))).get()
                }
                let r: Result<PGRows, PGError>
                do throws(PGError) { r = .success(try PGConnection.rows(from: result, conn: conn)) } catch { r = .failure(error) }
                // Like PQexec: the last result wins, except that an error is never hidden by a later one.
                if case .failure = first {} else { first = r }
                if PQstatus(conn) != CONNECTION_OK { return try r.get() }
            }
            let now = monotonicNanos()
            guard now < deadline else { throw lost("no answer from the database within \(timeoutMs) ms") }
            var p = pollfd(fd: PQsocket(conn), events: Int16(POLLIN), revents: 0)
            let n = poll(&p, 1, Int32(min((deadline - now) / 1_000_000 + 1, 1000)))
            if n < 0 && errno != EINTR { throw lost("poll failed: errno \(errno)") }
            if n > 0 && PQconsumeInput(conn) == 0 { throw lost(String(cString: PQerrorMessage(conn)).trimmingNewline()) }
        }
    }

    /// Closes the connection after it failed mid-statement; the error to throw.
    private func lost(_ message: String) -> PGError {
        if let conn { PQfinish(conn) }
        conn = nil
        return PGError(kind: .connection, sqlState: nil, message: message)
    }

    /// Converts (and frees) one libpq result.
    static func rows(from result: OpaquePointer?, conn: OpaquePointer?) throws(PGError) -> PGRows {
        guard let result else {
            throw PGError(kind: .connection, sqlState: nil, message: conn.map { String(cString: PQerrorMessage($0)) } ?? "no result")
        }
        defer { PQclear(result) }
        let status = PQresultStatus(result)
        guard status == PGRES_TUPLES_OK || status == PGRES_COMMAND_OK else {
            let state = PQresultErrorField(result, Int32(UInt8(ascii: "C"))).map { String(cString: $0) }
            let msg = String(cString: PQresultErrorMessage(result)).trimmingNewline()
            let lost = conn.map { PQstatus($0) != CONNECTION_OK } ?? true
            throw PGError(kind: lost ? .connection : .query, sqlState: state, message: msg)
        }
        let nFields = Int(PQnfields(result)), nRows = Int(PQntuples(result))
        var columns: [String] = []
        for c in 0..<nFields { columns.append(String(cString: PQfname(result, Int32(c)))) }
        var rows: [[String?]] = []
        rows.reserveCapacity(nRows)
        for r in 0..<nRows {
            var row: [String?] = []
            row.reserveCapacity(nFields)
            for c in 0..<nFields {
                if PQgetisnull(result, Int32(r), Int32(c)) == 1 { row.append(nil) } else {
                    row.append(String(cString: PQgetvalue(result, Int32(r), Int32(c))))
                }
            }
            rows.append(row)
        }
        let affected = Int(String(cString: PQcmdTuples(result))) ?? 0
        return PGRows(columns: columns, rows: rows, affected: affected)
    }

    /// The socket, for LISTEN: poll it, then `consumeNotifications`.
    public var socket: Int32 { conn.map { PQsocket($0) } ?? -1 }

    /// Reads what arrived and returns NOTIFY payloads (channel, payload).
    public func consumeNotifications() throws(PGError) -> [(String, String)] {
        guard let conn, PQconsumeInput(conn) == 1 else {
            throw PGError(kind: .connection, sqlState: nil, message: conn.map { String(cString: PQerrorMessage($0)) } ?? "not connected")
        }
        var out: [(String, String)] = []
        while let n = PQnotifies(conn) {
            out.append((String(cString: n.pointee.relname), String(cString: n.pointee.extra)))
            PQfreemem(n)
        }
        return out
    }
}

extension String {
    func trimmingNewline() -> String {
        var s = self
        while s.last == "\n" || s.last == " " { s.removeLast() }
        return s
    }
}
