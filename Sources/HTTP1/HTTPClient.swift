import NetCore
import Runtime
import TLS

/// What a client exchange reports, in order, on its loop: `head`, any number of `body`, then
/// exactly one of `end` or `failed` (unless it was cancelled: then nothing more).
public protocol HTTPClientDelegate: AnyObject {
    func responseHead(_ head: HTTPResponseHead)
    func responseBody(_ bytes: UnsafeRawBufferPointer)
    func responseEnd()
    func responseFailed(_ error: HTTPClientError)
}

public enum HTTPClientError: Error, Sendable, Equatable, CustomStringConvertible {
    public enum Phase: String, Sendable { case connect, firstByte = "first byte", idle }
    case connectFailed(String)
    case timedOut(Phase)
    /// The response broke the protocol (or the parser's bounds).
    case malformed(String)
    /// The connection ended before the response did.
    case closed(String)
    /// TLS refused (an untrusted certificate, a wrong host name) or broke.
    case tls(String)
    /// Too many requests in flight to this upstream on this loop.
    case saturated
    /// The request head would carry a control character or a space where none may be (a CR/LF
    /// would start a header of its own): it is never written.
    case invalidRequest(String)

    public var description: String {
        switch self {
        case .connectFailed(let s): return "connect failed: \(s)"
        case .timedOut(let p): return "no \(p.rawValue) within the timeout"
        case .malformed(let s): return "malformed response: \(s)"
        case .closed(let s): return "connection closed: \(s)"
        case .tls(let s): return "TLS: \(s)"
        case .saturated: return "too many requests in flight"
        case .invalidRequest(let s): return "request not sent: \(s)"
        }
    }
}

public struct HTTPClientTimeouts: Sendable {
    public var connectNanos: UInt64
    public var firstByteNanos: UInt64
    public var idleNanos: UInt64
    public init(connectMs: Int, firstByteMs: Int, idleMs: Int) {
        connectNanos = UInt64(connectMs) * 1_000_000
        firstByteNanos = UInt64(firstByteMs) * 1_000_000
        idleNanos = UInt64(idleMs) * 1_000_000
    }
}

/// A request in flight; `cancel` closes its connection at once (the upstream sees the stream end).
public protocol HTTPClientExchange: AnyObject {
    func cancel()
}

/// Keep-alive connections to one upstream, owned by one loop (every call on that loop). At most
/// `maxConnections` are open; idle ones are reused newest first and closed after `idleKeepNanos`.
public final class HTTPClientPool {
    public let loop: EventLoop
    public let address: SocketAddress
    public let hostHeader: String
    public let maxConnections: Int
    public let idleKeepNanos: UInt64
    /// TLS: the trust settings and the name the certificate must carry.
    let tls: (context: TLSContext, serverName: String)?
    var idle: [ClientConnection] = []
    public internal(set) var openConnections = 0

    public init(loop: EventLoop, address: SocketAddress, hostHeader: String, maxConnections: Int, idleKeepNanos: UInt64 = 30_000_000_000,
                tls: (context: TLSContext, serverName: String)? = nil) {
        self.loop = loop
        self.address = address
        self.hostHeader = hostHeader
        self.maxConnections = maxConnections
        self.idleKeepNanos = idleKeepNanos
        self.tls = tls
    }

    /// Sends `method path` with `headers` and `body`; the delegate hears the response.
    @discardableResult
    public func request(method: String, path: String, headers: HTTPHeaders, body: [UInt8], timeouts: HTTPClientTimeouts,
                        delegate: HTTPClientDelegate) -> HTTPClientExchange {
        var head = "\(method) \(path) HTTP/1.1\r\nHost: \(hostHeader)\r\nContent-Length: \(body.count)\r\n"
        for (n, v) in headers.fields { head += "\(n): \(v)\r\n" }
        head += "\r\n"
        let bytes = Array(head.utf8) + body
        let exchange = ClientExchange(pool: self, request: bytes, timeouts: timeouts, delegate: delegate)
        exchange.refusal = HTTPClientPool.headProblem(method: method, path: path, host: hostHeader, headers: headers)
        exchange.begin()
        return exchange
    }

    /// What makes a request head unsafe to write, or nil: the method and header names must be
    /// tokens (RFC 9110 §5.6.2), the target and Host visible ASCII, header values free of control
    /// characters other than HTAB (RFC 9110 §5.5) — so nothing can split the head.
    static func headProblem(method: String, path: String, host: String, headers: HTTPHeaders) -> String? {
        func isToken(_ s: String) -> Bool {
            !s.isEmpty && s.utf8.allSatisfy { c in
                (c >= 48 && c <= 57) || (c >= 65 && c <= 90) || (c >= 97 && c <= 122) || "!#$%&'*+-.^_`|~".utf8.contains(c)
            }
        }
        func isVisible(_ s: String) -> Bool { !s.isEmpty && s.utf8.allSatisfy { $0 > 32 && $0 < 127 } }
        guard isToken(method) else { return "the method is not a token" }
        guard isVisible(path) else { return "the target has spaces or control characters" }
        guard isVisible(host) else { return "the Host has spaces or control characters" }
        for (n, v) in headers.fields {
            guard isToken(n) else { return "a header name is not a token" }
            guard v.utf8.allSatisfy({ $0 == 9 || ($0 >= 32 && $0 != 127) }) else { return "the value of \(n) has control characters" }
        }
        return nil
    }

    func take() -> ClientConnection? {
        while let c = idle.popLast() {
            c.idleTimer?.cancel()
            c.idleTimer = nil
            if c.connection.isOpen { return c }
        }
        return nil
    }

    func giveBack(_ c: ClientConnection) {
        guard c.connection.isOpen else { return }
        idle.append(c)
        c.idleTimer = loop.schedule(afterNanos: idleKeepNanos) { [weak self, weak c] in
            guard let self, let c else { return }
            self.idle.removeAll { $0 === c }
            c.connection.close(afterFlush: false)
        }
    }

    func closed(_ c: ClientConnection) {
        openConnections -= 1
        idle.removeAll { $0 === c }
    }

    /// Closes every idle connection (shutdown).
    public func closeIdle() {
        for c in idle { c.idleTimer?.cancel(); c.connection.close(afterFlush: false) }
        idle.removeAll()
    }
}

/// One pooled TCP connection (TLS when the upstream is https): at most one exchange at a time.
final class ClientConnection: ConnectionHandler {
    let connection: Connection
    weak var pool: HTTPClientPool?
    var exchange: ClientExchange?
    var idleTimer: TimerHandle?
    var served = 0
    let tls: TLSSession?
    /// Plaintext waiting for the TLS handshake to finish.
    var pendingPlaintext: [UInt8] = []

    init(connection: Connection, pool: HTTPClientPool, tls: TLSSession?) {
        self.connection = connection
        self.pool = pool
        self.tls = tls
    }

    /// The TCP connection is up: TLS starts its handshake.
    func connected() throws(TLSError) {
        if let tls { connection.write(try tls.start()) }
    }

    /// Sends request bytes (sealed when TLS; held until its handshake is done).
    func send(_ bytes: [UInt8]) throws(TLSError) {
        guard let tls else { return connection.write(bytes) }
        guard tls.handshakeDone else { pendingPlaintext += bytes; return }
        connection.write(try tls.seal(bytes))
    }

    func connectionRead(_ connection: Connection, _ bytes: UnsafeMutableRawBufferPointer) {
        guard let exchange else {
            connection.close(afterFlush: false)  // an idle connection that talks: not trusted again
            return
        }
        guard let tls else { return exchange.read(UnsafeRawBufferPointer(bytes)) }
        do throws(TLSError) {
            let wasDone = tls.handshakeDone
            try tls.receive(UnsafeRawBufferPointer(bytes)) { plain in exchange.read(plain) }
            let out = tls.outgoing()
            if !out.isEmpty { connection.write(out) }
            if !wasDone && tls.handshakeDone && !pendingPlaintext.isEmpty {
                let p = pendingPlaintext
                pendingPlaintext = []
                connection.write(try tls.seal(p))
            }
        } catch {
            exchange.tlsFailed(error.description)
        }
    }

    func connectionClosed(_ connection: Connection, error: SystemError?) {
        idleTimer?.cancel()
        pool?.closed(self)
        let e = exchange
        exchange = nil
        e?.connectionEnded(error)
    }
}

final class ClientExchange: HTTPClientExchange {
    let pool: HTTPClientPool
    let request: [UInt8]
    let timeouts: HTTPClientTimeouts
    weak var delegate: HTTPClientDelegate?
    var conn: ClientConnection?
    var parser = HTTPResponseParser()
    var timer: TimerHandle?
    var finished = false
    var receivedAny = false
    var reused = false
    var retried = false
    var keepAlive = false
    /// Why the request must not be written (nil: it may).
    var refusal: String?

    init(pool: HTTPClientPool, request: [UInt8], timeouts: HTTPClientTimeouts, delegate: HTTPClientDelegate) {
        self.pool = pool
        self.request = request
        self.timeouts = timeouts
        self.delegate = delegate
    }

    func begin() {
        if let refusal { return fail(.invalidRequest(refusal)) }
        if let c = pool.take() {
            reused = true
            attach(c)
            do throws(TLSError) { try c.send(request) } catch { return fail(.tls(error.description)) }
            arm(timeouts.firstByteNanos, .firstByte)
            return
        }
        guard pool.openConnections < pool.maxConnections else { return fail(.saturated) }
        reused = false
        do throws(SystemError) {
            pool.openConnections += 1
            var session: TLSSession?
            if let tls = pool.tls {
                do throws(TLSError) { session = try TLSSession(context: tls.context, host: tls.serverName) } catch {
                    pool.openConnections -= 1
                    return fail(.tls(error.description))
                }
            }
            let connection = try Connection.connect(to: pool.address, loop: pool.loop) { [weak self] _, error in
                guard let self, !self.finished else { return }
                if let error { return self.fail(.connectFailed(error.description)) }
                do throws(TLSError) { try self.conn?.connected() } catch { return self.fail(.tls(error.description)) }
                self.arm(self.timeouts.firstByteNanos, .firstByte)
            }
            let c = ClientConnection(connection: connection, pool: pool, tls: session)
            connection.handler = c
            attach(c)
            // Plain: queued until connected; TLS: held until the handshake is done.
            do throws(TLSError) { try c.send(request) } catch { return fail(.tls(error.description)) }
            arm(timeouts.connectNanos, .connect)
        } catch {
            pool.openConnections -= 1
            fail(.connectFailed(error.description))
        }
    }

    private func attach(_ c: ClientConnection) {
        conn = c
        c.exchange = self
        c.served += 1
    }

    private func arm(_ nanos: UInt64, _ phase: HTTPClientError.Phase) {
        timer?.cancel()
        timer = pool.loop.schedule(afterNanos: nanos) { [weak self] in self?.timedOut(phase) }
    }

    private func timedOut(_ phase: HTTPClientError.Phase) {
        guard !finished else { return }
        fail(.timedOut(phase))
    }

    func cancel() {
        guard !finished else { return }
        finished = true
        delegate = nil
        drop()
    }

    /// Closes the connection (what it was doing is abandoned).
    private func drop() {
        timer?.cancel()
        timer = nil
        if let c = conn {
            conn = nil
            c.exchange = nil
            c.connection.close(afterFlush: false)
        }
    }

    private func fail(_ e: HTTPClientError) {
        guard !finished else { return }
        finished = true
        drop()
        let d = delegate
        delegate = nil
        d?.responseFailed(e)
    }

    func read(_ bytes: UnsafeRawBufferPointer) {
        guard !finished else { return }
        receivedAny = true
        arm(timeouts.idleNanos, .idle)
        do throws(HTTPResponseError) {
            try parser.feed(bytes) { event in
                switch event {
                case .head(let h):
                    // (Not read from the parser later: it is mid-feed while events are reported.)
                    keepAlive = h.keepAlive
                    delegate?.responseHead(h)
                case .body(let b): delegate?.responseBody(b)
                case .end: complete()
                }
            }
        } catch {
            fail(.malformed(error.description))
        }
    }

    private func complete() {
        guard !finished else { return }
        finished = true
        timer?.cancel()
        timer = nil
        if let c = conn {
            conn = nil
            c.exchange = nil
            // The response said whether the connection may be reused.
            if keepAlive { pool.giveBack(c) } else { c.connection.close(afterFlush: false) }
        }
        let d = delegate
        delegate = nil
        d?.responseEnd()
    }

    func tlsFailed(_ message: String) {
        fail(.tls(message))
    }

    func connectionEnded(_ error: SystemError?) {
        guard !finished else { return }
        conn = nil
        // A reused connection the server had already closed: try once more on a new one.
        if reused && !receivedAny && !retried {
            retried = true
            timer?.cancel()
            parser = HTTPResponseParser()
            begin()
            return
        }
        do throws(HTTPResponseError) {
            try parser.finish { event in
                if case .end = event { complete() }
            }
            if !finished { fail(.closed("before the end of the response")) }
        } catch {
            fail(.closed(error.description))
        }
    }
}
