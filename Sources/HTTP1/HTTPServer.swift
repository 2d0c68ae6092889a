#if canImport(Glibc)
import Glibc
#endif
import NetCore
import Runtime

public struct HTTPServerConfiguration: Sendable {
    public var limits = HTTPParserLimits()
    /// From the first byte of a request until its head (and body) are in: slowloris guard.
    public var requestReadTimeoutNanos: UInt64 = 10_000_000_000
    /// How long a keep-alive connection may sit between requests.
    public var idleTimeoutNanos: UInt64 = 60_000_000_000
    /// Outbound bytes a connection may queue before it is dropped as too slow.
    public var maxOutboundBytes = 4 << 20
    /// Bytes of later pipelined requests buffered while one is being answered.
    public var maxPipelineBufferBytes = 64 * 1024
    /// Join a port another process already listens on (SO_REUSEPORT), splitting its traffic.
    public var sharePort = false
    /// Where a connection dropped mid-answer is reported (nil: nowhere).
    public var logger: Logger?
    public init() {}
}

/// Accepts HTTP/1.1 connections on every loop of a group and hands requests to a router.
public final class HTTPServer: @unchecked Sendable {
    public let router: Router
    public let configuration: HTTPServerConfiguration
    private var tcp: TCPServer?

    public init(router: Router, configuration: HTTPServerConfiguration = HTTPServerConfiguration()) {
        self.router = router
        self.configuration = configuration
    }

    public func start(group: EventLoopGroup, host: String, port: Int) throws(SystemError) -> SocketAddress {
        let router = router, config = configuration
        let dates = UncheckedBox(group.loops.map { _ in DateCache() })
        let loopIndex = UncheckedBox(Dictionary(uniqueKeysWithValues: group.loops.enumerated().map { (ObjectIdentifier($1), $0) }))
        let server = try TCPServer(group: group, host: host, port: port, maxOutboundBytes: config.maxOutboundBytes,
                                   sharePort: config.sharePort) { conn in
            let dc = dates.value[loopIndex.value[ObjectIdentifier(conn.loop)]!]
            HTTPServerConnection.attach(conn, router: router, configuration: config, dateCache: dc)
        }
        tcp = server
        return server.boundAddress
    }

    public func stopAccepting() async {
        await tcp?.close()
    }

    /// Stops accepting; `done` runs once every listener is closed.
    public func stopAccepting(done: @escaping @Sendable () -> Void) {
        guard let tcp else { return done() }
        tcp.close(done: done)
    }
}

/// The HTTP/1.1 protocol on one connection: parse, route, answer in order, keep alive or close.
final class HTTPServerConnection: ConnectionHandler {
    let connection: Connection
    let router: Router
    let configuration: HTTPServerConfiguration
    let dateCache: DateCache
    private var parser: HTTPRequestParser
    private var inbound = ByteBuffer()
    private var currentHead: HTTPRequestHead?
    private var currentMatch: Router.Match?
    /// The responder of the request being answered; later pipelined requests wait for it.
    private var active: HTTPResponder?
    private var upgraded = false
    private var timer: TimerHandle?
    private var timerDeadline: UInt64 = 0
    private var requestStarted: UInt64 = 0
    private var lastActivity: UInt64 = 0

    static func attach(_ c: Connection, router: Router, configuration: HTTPServerConfiguration, dateCache: DateCache) {
        let h = HTTPServerConnection(c, router: router, configuration: configuration, dateCache: dateCache)
        c.handler = h
        h.armTimer()
    }

    private init(_ c: Connection, router: Router, configuration: HTTPServerConfiguration, dateCache: DateCache) {
        connection = c
        self.router = router
        self.configuration = configuration
        self.dateCache = dateCache
        parser = HTTPRequestParser(limits: configuration.limits, bodyLimit: router.defaultBodyLimit)
        lastActivity = c.loop.now
    }

    // MARK: timeouts

    /// One timer per connection, re-armed lazily: activity only moves a timestamp, and when the
    /// timer fires it checks which deadline (request read or idle) actually passed.
    private func armTimer() {
        let t = nextDeadline()
        timerDeadline = t
        timer = connection.loop.schedule(atNanos: t) { [weak self] in self?.timerFired() }
    }

    /// A request's first byte arrived: its read deadline counts from now. The timer armed while
    /// idle points at the (longer) idle deadline, so it is pulled in here; otherwise a client
    /// dripping a byte a second would get the idle timeout instead of the request timeout.
    private func requestBegan() {
        requestStarted = connection.loop.now
        let deadline = requestStarted &+ configuration.requestReadTimeoutNanos
        guard active == nil, timer == nil || timerDeadline > deadline else { return }
        timer?.cancel()
        timerDeadline = deadline
        timer = connection.loop.schedule(atNanos: deadline) { [weak self] in self?.timerFired() }
    }

    private func nextDeadline() -> UInt64 {
        if active != nil { return connection.loop.now &+ configuration.idleTimeoutNanos }
        if !parser.isIdle || !inbound.isEmpty { return requestStarted &+ configuration.requestReadTimeoutNanos }
        return lastActivity &+ configuration.idleTimeoutNanos
    }

    private func timerFired() {
        timer = nil
        guard connection.isOpen, !upgraded else { return }
        let now = monotonicNanos()
        if active == nil {
            if !parser.isIdle || !inbound.isEmpty {
                if now >= requestStarted &+ configuration.requestReadTimeoutNanos {
                    fail(HTTPParseError(408, "request not received in time"))
                    return
                }
            } else if now >= lastActivity &+ configuration.idleTimeoutNanos {
                connection.close()
                return
            }
        }
        armTimer()
    }

    // MARK: reading

    func connectionRead(_ c: Connection, _ bytes: UnsafeMutableRawBufferPointer) {
        if parser.isIdle && inbound.isEmpty { requestBegan() }
        lastActivity = c.loop.now
        inbound.append(UnsafeRawBufferPointer(bytes))
        processInbound()
    }

    private func processInbound() {
        while active == nil, !upgraded, connection.isOpen {
            if parser.isIdle && !inbound.isEmpty { requestBegan() }
            switch parser.next(&inbound) {
            case .failure(let e):
                fail(e)
                return
            case .success(.needMore):
                return
            case .success(.head(let head)):
                currentHead = head
                // Matched once: the route's body cap applies while the body is read, and the
                // same match is dispatched when the body is complete.
                currentMatch = router.match(method: head.method, path: head.path)
                if case .found(let route, _) = currentMatch { parser.bodyLimit = route.bodyLimit }
                if parser.isReadingBody, head.headers.first("expect")?.lowercased() == "100-continue" {
                    connection.write("HTTP/1.1 100 Continue\r\n\r\n")
                }
            case .success(.end(let body)):
                guard let head = currentHead, let match = currentMatch else { return }
                currentHead = nil
                currentMatch = nil
                dispatch(head: head, body: body, match: match)
            }
        }
        if active != nil && inbound.readableBytes > configuration.maxPipelineBufferBytes {
            connection.pauseReading()
        }
    }

    private func dispatch(head: HTTPRequestHead, body: [UInt8], match: Router.Match) {
        let responder = HTTPResponder(owner: self, head: head)
        active = responder
        var request = HTTPRequest(head: head, body: body)
        switch match {
        case .found(let route, let params):
            request.pathParameters = params
            route.handler(request, responder)
        case .methodNotAllowed(let allowed):
            var h = HTTPHeaders()
            h.add("Allow", allowed.joined(separator: ", "))
            responder.sendError(status: 405, code: "method_not_allowed", message: "method \(head.method) not allowed", headers: h)
        case .notFound:
            if let fallback = router.fallback {
                fallback(request, responder)
            } else {
                responder.sendError(status: 404, code: "not_found", message: "no route for \(head.path)")
            }
        }
    }

    /// Refuses the request and closes: after a framing error nothing later on the wire can be trusted.
    private func fail(_ e: HTTPParseError) {
        let body = Array(HTTPResponder.errorBody(status: e.status, code: HTTPServerConnection.code(for: e.status), message: e.reason).utf8)
        var h = HTTPHeaders()
        h.add("Content-Type", "application/json")
        let head = HTTPResponseEncoder.head(status: e.status, headers: h, contentLength: body.count, chunked: false,
                                            keepAlive: false, date: dateCache.current())
        connection.write(head)
        connection.write(body)
        connection.close()
        inbound.clear()
    }

    static func code(for status: Int) -> String {
        switch status {
        case 413: return "payload_too_large"
        case 414: return "uri_too_long"
        case 431: return "headers_too_large"
        case 408: return "request_timeout"
        case 505: return "http_version_not_supported"
        default: return "invalid_request"
        }
    }

    // MARK: responder callbacks

    func responderFinished(_ r: HTTPResponder, keepAlive: Bool) {
        guard active === r else { return }
        active = nil
        lastActivity = connection.loop.now
        if !keepAlive {
            connection.close()
            return
        }
        connection.resumeReading()
        if !inbound.isEmpty {
            // Answer pipelined requests in order, after the current turn of the loop.
            connection.loop.runAfterTick { [weak self] in self?.processInbound() }
        }
    }

    func responderUpgraded(_ r: HTTPResponder, to handler: ConnectionHandler) -> [UInt8] {
        upgraded = true
        active = nil
        timer?.cancel()
        timer = nil
        connection.handler = handler
        connection.resumeReading()
        let leftover = inbound.readableArray()
        inbound.clear()
        return leftover
    }

    func connectionClosed(_ c: Connection, error: SystemError?) {
        // An answer dropped because it could not be sent (the outbound cap) is never silent.
        if let error, error.errno == ENOBUFS, let active, let logger = configuration.logger {
            logger.warning("connection dropped before its answer was sent", ["path": String(active.head.path.prefix(200)),
                                                                               "error": error.description])
        }
        timer?.cancel()
        timer = nil
        active?.connectionDidClose()
        active = nil
    }

}
