import JSON

/// A client message on the multiplexed WebSocket: `{"id", "method", "path", "body"}`, mirroring a
/// REST request. Decoding is pure (and fuzzed): bytes in, an envelope or an error out, never a crash.
public struct Envelope: Sendable {
    /// Echoed on every reply: a non-empty string of at most 128 bytes, or a number.
    public var id: JSONValue
    public var method: String
    /// The request target as given: a path, maybe with a query string.
    public var target: String
    /// nil when absent or null.
    public var body: JSONValue?

    public static let methods = ["GET", "POST", "PATCH", "DELETE", "PUT"]
    public static let maxTargetBytes = 8192

    /// The error carries the id when one could be read, so the reply can still name the request.
    public struct Failure: Error, Sendable {
        public let id: JSONValue
        public let error: APIError
    }

    public static func decode(_ bytes: [UInt8]) -> Result<Envelope, Failure> {
        let message: JSONValue
        do throws(JSONError) {
            message = try JSONParser.parse(bytes)
        } catch {
            return .failure(Failure(id: .null, error: APIError(.invalidRequest, "message is not valid JSON: \(error)")))
        }
        guard let o = message.objectValue else {
            return .failure(Failure(id: .null, error: APIError(.invalidRequest, "message must be a JSON object {id, method, path, body}")))
        }
        let id = o["id"] ?? .null
        switch id {
        case .string(let s) where !s.isEmpty && s.utf8.count <= 128: break
        case .number: break
        default:
            return .failure(Failure(id: .null, error: APIError(.invalidRequest, "id must be a non-empty string of at most 128 bytes, or a number", field: "id")))
        }
        guard let method = o["method"]?.stringValue, methods.contains(method) else {
            return .failure(Failure(id: id, error: APIError(.invalidRequest, "method must be GET, POST, PATCH, PUT or DELETE", field: "method")))
        }
        guard let target = o["path"]?.stringValue, target.hasPrefix("/"), target.utf8.count <= maxTargetBytes else {
            return .failure(Failure(id: id, error: APIError(.invalidRequest, "path must be a string starting with '/'", field: "path")))
        }
        let body = o["body"].flatMap { $0.isNull ? nil : $0 }
        return .success(Envelope(id: id, method: method, target: target, body: body))
    }
}
