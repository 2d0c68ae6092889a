import NetCore
import Runtime

/// Answers one request: a whole response, a chunked stream (e.g. SSE), or a protocol upgrade.
/// Loop-confined: call it on the loop that handed it out (`loop`). Calls after the connection
/// closed are ignored; `onClose` tells a producer to stop.
public final class HTTPResponder {
    private weak var owner: HTTPServerConnection?
    public let head: HTTPRequestHead
    public let loop: EventLoop
    public private(set) var state: State = .idle
    private var keepAlive: Bool
    private var chunkScratch: [UInt8] = []
    /// Called once if the client goes away before the response ends.
    public var onClose: (() -> Void)?

    public enum State { case idle, streaming, finished }

    init(owner: HTTPServerConnection, head: HTTPRequestHead) {
        self.owner = owner
        self.head = head
        self.loop = owner.connection.loop
        self.keepAlive = head.keepAlive
    }

    public var isConnected: Bool { owner?.connection.isOpen ?? false }
    public var pendingOutboundBytes: Int { owner?.connection.pendingOutboundBytes ?? 0 }

    /// Sends a complete response.
    public func send(status: Int, headers: HTTPHeaders = HTTPHeaders(), body: [UInt8] = []) {
        guard state == .idle, let owner else { return }
        state = .finished
        let isHead = head.method == "HEAD"
        let bytes = HTTPResponseEncoder.head(status: status, headers: headers, contentLength: body.count, chunked: false,
                                             keepAlive: keepAlive, date: owner.dateCache.current())
        // The outbound cap drops readers too slow for a stream; one complete answer larger than
        // it (a big /metrics, a large export) is not that: the cap makes room for it.
        let c = owner.connection
        let size = bytes.count + (isHead ? 0 : body.count)
        // Only for a reader that has taken everything before: one pipelining without reading is
        // still dropped at the cap.
        if c.pendingOutboundBytes == 0 && size > c.maxOutboundBytes { c.maxOutboundBytes = size + owner.configuration.maxOutboundBytes }
        c.write(bytes)
        if !isHead && !body.isEmpty { c.write(body) }
        owner.responderFinished(self, keepAlive: keepAlive)
    }

    public func send(status: Int, contentType: String, body: String, headers: HTTPHeaders = HTTPHeaders()) {
        var h = headers
        h.replace("Content-Type", contentType)
        send(status: status, headers: h, body: Array(body.utf8))
    }

    public func sendJSON(status: Int = 200, _ json: String, headers: HTTPHeaders = HTTPHeaders()) {
        send(status: status, contentType: "application/json", body: json, headers: headers)
    }

    /// The project-wide error shape `{"error": {"code", "message"}}`.
    public func sendError(status: Int, code: String, message: String, headers: HTTPHeaders = HTTPHeaders()) {
        sendJSON(status: status, HTTPResponder.errorBody(status: status, code: code, message: message), headers: headers)
    }

    /// The API's error object (code, message, type, param), for errors the HTTP layer answers itself.
    static func errorBody(status: Int, code: String, message: String) -> String {
        let type = status >= 500 ? "server_error" : "invalid_request_error"
        return "{\"error\":{\"code\":\"\(code)\",\"message\":\(JSONText.quoted(message)),\"type\":\"\(type)\",\"param\":null}}"
    }

    /// Starts a chunked response; follow with `writeChunk` and `end`.
    public func startStream(status: Int = 200, headers: HTTPHeaders) {
        guard state == .idle, let owner else { return }
        state = .streaming
        let bytes = HTTPResponseEncoder.head(status: status, headers: headers, contentLength: nil, chunked: true,
                                             keepAlive: keepAlive, date: owner.dateCache.current())
        owner.connection.write(bytes)
    }

    /// Writes one chunk now (flush on produce).
    public func writeChunk(_ data: UnsafeRawBufferPointer) {
        guard state == .streaming, let owner, data.count > 0 else { return }
        chunkScratch.removeAll(keepingCapacity: true)
        HTTPResponseEncoder.chunk(data, into: &chunkScratch)
        owner.connection.write(chunkScratch)
    }

    public func writeChunk(_ s: String) {
        var s = s
        s.withUTF8 { writeChunk(UnsafeRawBufferPointer($0)) }
    }

    public func end() {
        guard state == .streaming, let owner else { return }
        state = .finished
        owner.connection.write("0\r\n\r\n")
        owner.responderFinished(self, keepAlive: keepAlive)
    }

    /// Writes the 101 response and hands the socket to `handler`; returns bytes that arrived after
    /// the upgrade request (they belong to the new protocol).
    public func upgrade(responseHead: [UInt8], to handler: ConnectionHandler) -> (Connection, [UInt8])? {
        guard state == .idle, let owner else { return nil }
        state = .finished
        owner.connection.write(responseHead)
        let leftover = owner.responderUpgraded(self, to: handler)
        return (owner.connection, leftover)
    }

    /// Closes the connection without finishing the response (what a crashing upstream looks like).
    public func abort() {
        guard state != .finished, let owner else { return }
        state = .finished
        owner.connection.close()
    }

    func connectionDidClose() {
        state = .finished
        let cb = onClose
        onClose = nil
        cb?()
    }

}

/// Server-Sent Events over a chunked response (WHATWG HTML §9.2). Each event is written as soon
/// as it is produced.
public struct SSEWriter {
    public let responder: HTTPResponder

    public init(responder: HTTPResponder, extraHeaders: HTTPHeaders = HTTPHeaders()) {
        self.responder = responder
        var h = extraHeaders
        h.replace("Content-Type", "text/event-stream")
        h.replace("Cache-Control", "no-store")
        h.add("X-Accel-Buffering", "no")
        responder.startStream(headers: h)
    }

    /// `data` may hold newlines: each line becomes its own `data:` field.
    public func send(event: String? = nil, data: String) {
        var s = ""
        if let event { s += "event: \(event)\n" }
        for line in data.split(separator: "\n", omittingEmptySubsequences: false) {
            s += "data: "
            s += line
            s += "\n"
        }
        s += "\n"
        responder.writeChunk(s)
    }

    /// A comment line: ignored by clients, keeps proxies from timing the stream out.
    public func keepalive() { responder.writeChunk(":\n\n") }

    public func end() { responder.end() }
}
