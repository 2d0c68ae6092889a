/// Which browser origins may call (open a WebSocket, make a cookie-authenticated write, sign in).
/// Requests without Origin are not from a browser page and are let through; browser pages must
/// come from the node's own origin or the list.
public struct OriginPolicy: Sendable {
    public var allowed: [String]
    public var allowSameOrigin: Bool

    public init(allowed: [String] = [], allowSameOrigin: Bool = true) {
        self.allowed = allowed.map { $0.lowercased() }
        self.allowSameOrigin = allowSameOrigin
    }

    public static let any = OriginPolicy(allowed: ["*"])

    public func permits(origin: String?, host: String?) -> Bool {
        guard let origin else { return true }
        let o = origin.lowercased()
        if allowed.contains("*") || allowed.contains(o) { return true }
        if allowSameOrigin, let host {
            let h = host.lowercased()
            return o == "http://" + h || o == "https://" + h
        }
        return false
    }
}
