import Domain
import HTTP1

extension HTTPResponder {
    /// The one way an `APIError` becomes an HTTP answer (REST routes, sign-in, the WebSocket
    /// upgrade, a stream refused before it began, unknown paths): its status, the error body,
    /// and `Retry-After` (whole seconds, rounded up) when it says when to retry.
    public func send(_ error: APIError, headers: HTTPHeaders = HTTPHeaders()) {
        var h = headers
        h.add("Content-Type", "application/json")
        if let ms = error.retryAfterMs { h.add("Retry-After", "\(max(1, (ms + 999) / 1000))") }
        send(status: error.status, headers: h, body: error.jsonBytes)
    }
}
