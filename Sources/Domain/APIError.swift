import JSON

/// Stable error codes of the public API (DESIGN §4). The raw value is what clients see.
public enum ErrorCode: String, Sendable {
    case invalidRequest = "invalid_request"
    case unauthorized
    case forbidden
    case notFound = "not_found"
    /// `GET /v1/models/{id}` of a model this node does not serve (OpenAI's code).
    case modelNotFound = "model_not_found"
    case methodNotAllowed = "method_not_allowed"
    case conflict
    case rateLimitExceeded = "rate_limit_exceeded"
    case concurrentGenerationsLimitExceeded = "concurrent_generations_limit_exceeded"
    case serverBusy = "server_busy"
    case modelUnavailable = "model_unavailable"
    case generationInterrupted = "generation_interrupted"
    case presetsDegraded = "presets_degraded"
    case payloadTooLarge = "payload_too_large"
    case unsupportedMediaType = "unsupported_media_type"
    case internalError = "internal_error"
    /// An upstream model server refused the request for reasons that are not the client's
    /// (its credentials, its route): 502.
    case upstreamError = "upstream_error"

    public var httpStatus: Int {
        switch self {
        case .invalidRequest: return 400
        case .unauthorized: return 401
        case .forbidden: return 403
        case .notFound, .modelNotFound: return 404
        case .methodNotAllowed: return 405
        case .conflict: return 409
        case .payloadTooLarge: return 413
        case .unsupportedMediaType: return 415
        case .rateLimitExceeded, .concurrentGenerationsLimitExceeded: return 429
        case .serverBusy, .modelUnavailable, .presetsDegraded, .generationInterrupted: return 503
        case .internalError: return 500
        case .upstreamError: return 502
        }
    }

    /// The `type` field OpenAI SDKs read alongside the code.
    var openAIType: String {
        switch self {
        case .invalidRequest, .payloadTooLarge, .unsupportedMediaType, .notFound, .modelNotFound, .conflict, .methodNotAllowed:
            return "invalid_request_error"
        case .unauthorized, .forbidden: return "authentication_error"
        case .rateLimitExceeded, .concurrentGenerationsLimitExceeded: return "rate_limit_error"
        default: return "server_error"
        }
    }
}

/// An error a client may see. Its message is safe to show by construction: it never carries
/// internal details (those go to the log).
public struct APIError: Error, Equatable, Sendable, CustomStringConvertible {
    public var code: ErrorCode
    public var message: String
    public var field: String?
    public var retryAfterMs: Int?
    /// An upstream model server's own 4xx answer, passed on as it was: its status, and its
    /// `error` object as JSON text (written instead of ours).
    public var upstreamStatus: Int?
    public var upstreamError: String?

    public init(_ code: ErrorCode, _ message: String, field: String? = nil, retryAfterMs: Int? = nil) {
        self.code = code
        self.message = message
        self.field = field
        self.retryAfterMs = retryAfterMs
    }

    public static func invalid(_ field: String, _ message: String) -> APIError {
        APIError(.invalidRequest, message, field: field)
    }

    /// A request_id that ran in the last window and whose result is no longer kept: it is never
    /// run twice, so the client must choose a new one.
    public static let requestIDUsed = APIError(.conflict, "request_id was used recently and its result is no longer kept; use a new one",
                                               field: "request_id")

    /// The upstream's own answer to a request it found wrong (400, 404, 422, …): not retried
    /// elsewhere, the breaker untouched, the client gets it as the upstream wrote it.
    public static func fromUpstream(status: Int, error: String, message: String) -> APIError {
        var e = APIError(.invalidRequest, message)
        e.upstreamStatus = status
        e.upstreamError = error
        return e
    }

    public var status: Int { upstreamStatus ?? code.httpStatus }
    public var description: String { "\(code.rawValue): \(message)" }

    /// `{"code", "message", "type", "param", "field"?, "retry_after_ms"?}` — the project's shape,
    /// plus `type`/`param` so the OpenAI SDKs classify it.
    public func writeBody(_ w: inout JSONWriter) {
        if let upstreamError { return w.raw(Array(upstreamError.utf8)) }
        w.beginObject()
        w.key("code"); w.string(code.rawValue)
        w.key("message"); w.string(message)
        w.key("type"); w.string(code.openAIType)
        w.key("param")
        if let field { w.string(field) } else { w.null() }
        if let field { w.key("field"); w.string(field) }
        if let retryAfterMs { w.key("retry_after_ms"); w.int(retryAfterMs) }
        w.endObject()
    }

    /// `{"error": {...}}`
    public var jsonBytes: [UInt8] {
        var w = JSONWriter()
        w.beginObject()
        w.key("error")
        writeBody(&w)
        w.endObject()
        return w.bytes
    }
}
