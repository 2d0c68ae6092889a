/// Who is calling. Always comes from a credential (API key or session cookie), never a body field.
public struct Identity: Sendable, Equatable {
    public let userID: String
    public let orgID: String?
    /// The API key behind the credential (sessions are made from a key).
    public let keyID: Int64

    public init(userID: String, orgID: String?, keyID: Int64) {
        self.userID = userID
        self.orgID = orgID
        self.keyID = keyID
    }

    /// The identity used when a node runs with `--auth off` (benchmarks, local experiments).
    public static let anonymous = Identity(userID: "local", orgID: nil, keyID: 0)

    /// What is wrong with a user (or org) name, or nil: 1...200 bytes of visible characters — no
    /// spaces, tabs, line breaks or other control or format characters, which would forge lines
    /// and columns wherever names are printed (CLI lists, logs) and split protocol fields.
    public static func nameProblem(_ name: String) -> String? {
        if name.isEmpty { return "must not be empty" }
        if name.utf8.count > 200 { return "at most 200 bytes (this one has \(name.utf8.count))" }
        for u in name.unicodeScalars {
            switch u.properties.generalCategory {
            case .control, .format, .spaceSeparator, .lineSeparator, .paragraphSeparator, .surrogate, .unassigned, .privateUse:
                return "only visible characters: no spaces, tabs, line breaks or control characters (U+\(String(u.value, radix: 16, uppercase: true)))"
            default: continue
            }
        }
        return nil
    }
}

/// A credential stopped being valid, as the account store announces it (LISTEN/NOTIFY).
public enum Revocation: Sendable, Equatable {
    /// An API key was revoked: it, and every session made from it, is dead.
    case key(id: Int64)
    /// A session ended (signed out); the token's SHA-256 in hex.
    case session(tokenHashHex: String)
    /// Announcements may have been missed (the feed reconnected): check every open credential again.
    case recheckAll
}

/// What a request presents to prove who it is.
public enum Credential: Sendable, Hashable {
    case apiKey(String)
    case session(String)
}
