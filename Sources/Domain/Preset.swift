import JSON

/// How a preset runs: one prompt on /v1/completions, or messages on /v1/chat/completions.
public enum PresetMode: String, Sendable, CaseIterable {
    case completion, chat
}

/// One message of a chat preset.
public struct ChatTurn: Sendable, Equatable {
    public static let roles = ["system", "user", "assistant"]
    public var role: String
    public var content: String
    public init(role: String, content: String) {
        self.role = role
        self.content = content
    }

    static func write(_ turns: [ChatTurn], _ w: inout JSONWriter) {
        w.beginArray()
        for t in turns {
            w.beginObject(); w.key("role"); w.string(t.role); w.key("content"); w.string(t.content); w.endObject()
        }
        w.endArray()
    }

    /// Messages as `write` wrote them (already validated when they were accepted).
    public static func read(_ v: JSONValue?) -> [ChatTurn] {
        (v?.arrayValue ?? []).compactMap { m in
            guard let role = m.objectValue?["role"]?.stringValue, let content = m.objectValue?["content"]?.stringValue else { return nil }
            return ChatTurn(role: role, content: content)
        }
    }

    public static func json(_ turns: [ChatTurn]) -> String {
        var w = JSONWriter()
        write(turns, &w)
        return w.string
    }
}

/// A saved prompt with its parameters, owned by one user.
public struct Preset: Sendable {
    public var id: String
    public var userID: String
    public var name: String
    public var description: String
    public var tags: [String]
    public var prompt: String
    /// The parameters as given (validated), so request parameters can override them field by field.
    public var parameters: JSONObject
    public var createdAt: String
    public var updatedAt: String
    public var version: Int
    public var mode: PresetMode = .completion
    /// A chat preset's messages (a completion preset has none).
    public var messages: [ChatTurn] = []

    public init(id: String, userID: String, name: String, description: String, tags: [String], prompt: String,
                parameters: JSONObject, createdAt: String, updatedAt: String, version: Int) {
        self.id = id
        self.userID = userID
        self.name = name
        self.description = description
        self.tags = tags
        self.prompt = prompt
        self.parameters = parameters
        self.createdAt = createdAt
        self.updatedAt = updatedAt
        self.version = version
    }

    /// The preset as the API shows it; `score` is the search match score when searching.
    /// `pending`: a write the database has not seen yet (the outbox); `degraded`: answered from
    /// the cache while the database is down.
    public func write(_ w: inout JSONWriter, score: Double? = nil, owner: Bool = false, pending: Bool = false, degraded: Bool = false) {
        w.beginObject()
        w.key("id"); w.string(id)
        if owner { w.key("user_id"); w.string(userID) }
        w.key("object"); w.string("preset")
        writeContent(&w)
        w.key("created_at"); w.string(createdAt)
        w.key("updated_at"); w.string(updatedAt)
        w.key("version"); w.int(version)
        if let score { w.key("score"); w.double((score * 1000).rounded() / 1000) }
        if pending { w.key("pending"); w.bool(true) }
        if degraded { w.key("degraded"); w.bool(true) }
        w.endObject()
    }

    /// What a version holds: name, description, tags, mode, prompt, messages, their variables, parameters.
    public func writeContent(_ w: inout JSONWriter) {
        w.key("name"); w.string(name)
        w.key("description"); w.string(description)
        w.key("tags"); w.beginArray(); for t in tags { w.string(t) }; w.endArray()
        w.key("mode"); w.string(mode.rawValue)
        w.key("prompt"); w.string(prompt)
        w.key("messages"); ChatTurn.write(messages, &w)
        // The placeholders, for a form of values (derived: never stored).
        w.key("variables"); w.beginArray(); for v in variables { w.string(v) }; w.endArray()
        w.key("parameters"); w.value(.object(parameters))
    }

    /// The placeholders of what runs: the prompt's, or a chat preset's messages'.
    public var variables: [String] {
        mode == .chat ? ChatTemplate(messages).variables : PromptTemplate(prompt).variables
    }

    /// A new preset made of `fields` (what is not given is empty).
    public static func made(id: String, userID: String, fields f: PresetFields, at now: String) -> Preset {
        var p = Preset(id: id, userID: userID, name: f.name ?? "", description: f.description ?? "", tags: f.tags ?? [],
                       prompt: f.prompt ?? "", parameters: f.parameters ?? JSONObject(), createdAt: now, updatedAt: now, version: 1)
        p.mode = f.mode ?? .completion
        p.messages = f.messages ?? []
        return p
    }

    /// Reads what `write(_:owner: true)` wrote (the shared cache's copy).
    public init?(json o: JSONObject) {
        guard let id = o["id"]?.stringValue, let user = o["user_id"]?.stringValue, let name = o["name"]?.stringValue,
              let prompt = o["prompt"]?.stringValue, let version = o["version"]?.intValue else { return nil }
        self.init(id: id, userID: user, name: name, description: o["description"]?.stringValue ?? "",
                  tags: o["tags"]?.arrayValue?.compactMap(\.stringValue) ?? [], prompt: prompt,
                  parameters: o["parameters"]?.objectValue ?? JSONObject(), createdAt: o["created_at"]?.stringValue ?? "",
                  updatedAt: o["updated_at"]?.stringValue ?? "", version: version)
        mode = o["mode"]?.stringValue.flatMap(PresetMode.init(rawValue:)) ?? .completion
        messages = ChatTurn.read(o["messages"])
    }

    /// This preset with `fields` applied (the ones given replace, the others stay).
    public func applying(_ f: PresetFields) -> Preset {
        var p = self
        if let v = f.name { p.name = v }
        if let v = f.description { p.description = v }
        if let v = f.tags { p.tags = v }
        if let v = f.prompt { p.prompt = v }
        if let v = f.parameters { p.parameters = v }
        if let v = f.mode { p.mode = v }
        if let v = f.messages { p.messages = v }
        return p
    }

    /// The prompt with the run's values (`PromptTemplate`): `input` at every `{{input}}` if there
    /// is one, else after a blank line; each `{{name}}` from `variables`. The size of the result is
    /// computed before anything is built, so a prompt of many placeholders cannot make the node
    /// build a huge string only to refuse it: past `maxBytes` this throws at once.
    public func render(input: String?, variables: [String: String] = [:], maxBytes: Int = .max) throws(APIError) -> String {
        try PromptTemplate(prompt).render(values: variables, input: input, maxBytes: maxBytes)
    }
}

/// Fields of a preset to create, or to change (nil = keep).
public struct PresetFields: Sendable, Equatable {
    public var name: String?
    public var description: String?
    public var tags: [String]?
    public var prompt: String?
    public var parameters: JSONObject?
    public var mode: PresetMode?
    public var messages: [ChatTurn]?
    public init() {}

    /// The fields given, as a JSON object (what the outbox keeps).
    public func write(_ w: inout JSONWriter) {
        w.beginObject()
        if let name { w.key("name"); w.string(name) }
        if let description { w.key("description"); w.string(description) }
        if let tags { w.key("tags"); w.beginArray(); for t in tags { w.string(t) }; w.endArray() }
        if let prompt { w.key("prompt"); w.string(prompt) }
        if let parameters { w.key("parameters"); w.value(.object(parameters)) }
        if let mode { w.key("mode"); w.string(mode.rawValue) }
        if let messages { w.key("messages"); ChatTurn.write(messages, &w) }
        w.endObject()
    }

    /// Reads what `write` wrote (already validated when it was accepted).
    public init(json o: JSONObject) {
        name = o["name"]?.stringValue
        description = o["description"]?.stringValue
        tags = o["tags"]?.arrayValue?.compactMap(\.stringValue)
        prompt = o["prompt"]?.stringValue
        parameters = o["parameters"]?.objectValue
        mode = o["mode"]?.stringValue.flatMap(PresetMode.init(rawValue:))
        messages = o["messages"].map { ChatTurn.read($0) }
    }
}

/// Checks preset bodies with the same rules (and the same parameter validator) as completions.
public struct PresetValidator: Sendable {
    public let policy: ParameterPolicy
    public static let maxName = 120
    public static let maxDescription = 2000
    public static let maxPromptBytes = 32 * 1024
    public static let maxTags = 16
    public static let maxTagLength = 40
    public static let maxMessages = 50
    /// Parameter fields a preset stores.
    static let parameterKeys = ["model", "temperature", "top_p", "max_tokens", "max_completion_tokens", "stop",
                                "presence_penalty", "frequency_penalty", "seed"]

    public init(policy: ParameterPolicy) { self.policy = policy }

    /// `exported`: an item of an export being imported — any state a preset can be in is taken
    /// (the checks of mode against messages are for presets written by hand).
    public func fields(from body: JSONObject, creating: Bool, exported: Bool = false) throws(APIError) -> PresetFields {
        var f = PresetFields()
        if let v = body["name"], !v.isNull {
            guard let s = v.stringValue else { throw .invalid("name", "name must be a string") }
            let name = s.trimmingWhitespace()
            guard !name.isEmpty else { throw .invalid("name", "name must not be empty") }
            // Counted as the database counts (code points): an emoji family is 7, an accent 1 more.
            guard name.unicodeScalars.count <= PresetValidator.maxName else {
                throw .invalid("name", "name must be at most \(PresetValidator.maxName) characters (Unicode code points)")
            }
            guard !name.unicodeScalars.contains(where: { $0.value < 0x20 || $0.value == 0x7F }) else {
                throw .invalid("name", "name must not contain control characters")
            }
            f.name = name
        } else if creating {
            throw .invalid("name", "name is required")
        }
        if let v = body["description"], !v.isNull {
            guard let s = v.stringValue else { throw .invalid("description", "description must be a string") }
            guard s.count <= PresetValidator.maxDescription else {
                throw .invalid("description", "description must be at most \(PresetValidator.maxDescription) characters")
            }
            try PresetValidator.refuseNUL(s, "description")
            f.description = s
        }
        if let v = body["tags"], !v.isNull {
            guard let a = v.arrayValue else { throw .invalid("tags", "tags must be an array of strings") }
            guard a.count <= PresetValidator.maxTags else { throw .invalid("tags", "at most \(PresetValidator.maxTags) tags") }
            var tags: [String] = []
            for t in a {
                guard let s = t.stringValue?.trimmingWhitespace(), !s.isEmpty, s.count <= PresetValidator.maxTagLength else {
                    throw .invalid("tags", "each tag must be a non-empty string of at most \(PresetValidator.maxTagLength) characters")
                }
                guard !s.unicodeScalars.contains(where: { $0.value < 0x20 || $0.value == 0x7F }) else {
                    throw .invalid("tags", "tags must not contain control characters")
                }
                if !tags.contains(s) { tags.append(s) }
            }
            f.tags = tags
        }
        if let v = body["mode"], !v.isNull {
            guard let s = v.stringValue, let m = PresetMode(rawValue: s) else { throw .invalid("mode", "mode must be \"completion\" or \"chat\"") }
            f.mode = m
        }
        if let v = body["messages"], !v.isNull {
            guard let a = v.arrayValue else { throw .invalid("messages", "messages must be an array of {role, content}") }
            guard a.count <= PresetValidator.maxMessages else { throw .invalid("messages", "at most \(PresetValidator.maxMessages) messages") }
            var turns: [ChatTurn] = []
            var bytes = 0
            for (i, m) in a.enumerated() {
                guard let o = m.objectValue, let role = o["role"]?.stringValue, ChatTurn.roles.contains(role) else {
                    throw .invalid("messages[\(i)].role", "each message has a role: system, user or assistant")
                }
                guard let content = o["content"]?.stringValue else { throw .invalid("messages[\(i)].content", "a message's content must be a string") }
                try PresetValidator.refuseNUL(content, "messages[\(i)].content")
                bytes += content.utf8.count
                turns.append(ChatTurn(role: role, content: content))
            }
            guard bytes <= PresetValidator.maxPromptBytes else {
                throw .invalid("messages", "the messages' contents must be at most \(PresetValidator.maxPromptBytes) bytes in all")
            }
            f.messages = turns
        }
        let chat = f.mode == .chat
        if let v = body["prompt"], !v.isNull {
            guard let s = v.stringValue else { throw .invalid("prompt", "prompt must be a string") }
            guard s.utf8.count <= PresetValidator.maxPromptBytes else {
                throw .invalid("prompt", "prompt must be at most \(PresetValidator.maxPromptBytes) bytes")
            }
            try PresetValidator.refuseNUL(s, "prompt")
            f.prompt = s
        } else if creating && !chat {
            throw .invalid("prompt", "prompt is required")
        }
        if creating && !exported && chat && (f.messages ?? []).isEmpty {
            throw .invalid("messages", "a chat preset needs messages (a system prompt, turns)")
        }
        if creating && !exported && !chat && f.messages.map({ !$0.isEmpty }) == true {
            throw .invalid("messages", "messages belong to chat presets: send \"mode\": \"chat\"")
        }
        if let v = body["parameters"], !v.isNull {
            guard let o = v.objectValue else { throw .invalid("parameters", "parameters must be an object") }
            do throws(APIError) {
                _ = try policy.parameters(from: o)
            } catch {
                throw APIError(.invalidRequest, error.message, field: error.field.map { "parameters.\($0)" } ?? "parameters")
            }
            var kept = JSONObject()
            for (k, x) in o.pairs where PresetValidator.parameterKeys.contains(k) && !x.isNull {
                try PresetValidator.refuseNUL(in: x, "parameters.\(k)")
                kept[k] = x
            }
            f.parameters = kept
        }
        return f
    }
}

extension PresetValidator {
    /// PostgreSQL text and jsonb cannot hold U+0000: a preset carrying one would be cut short or
    /// refused by the database, so it is refused here, naming the field. (Completions, which store
    /// nothing, keep NULs.)
    static func refuseNUL(_ s: String, _ field: String) throws(APIError) {
        if s.utf8.contains(0) { throw .invalid(field, "\(field) must not contain NUL (U+0000) characters") }
    }

    static func refuseNUL(in v: JSONValue, _ field: String) throws(APIError) {
        switch v {
        case .string(let s): try refuseNUL(s, field)
        case .array(let a): for x in a { try refuseNUL(in: x, field) }
        case .object(let o):
            for (k, x) in o.pairs {
                try refuseNUL(k, field)
                try refuseNUL(in: x, field)
            }
        default: break
        }
    }
}

extension String {
    public func replacingAll(_ needle: String, with replacement: String) -> String {
        guard !needle.isEmpty else { return self }
        var out = ""
        var rest = self[...]
        while let r = rest.range(ofLiteral: needle) {
            out += rest[..<r.lowerBound]
            out += replacement
            rest = rest[r.upperBound...]
        }
        out += rest
        return out
    }

    public func trimmingWhitespace() -> String {
        var s = self[...]
        while let f = s.first, f.isWhitespace { s = s.dropFirst() }
        while let l = s.last, l.isWhitespace { s = s.dropLast() }
        return String(s)
    }
}

extension StringProtocol {
    /// The first occurrence of `needle`, compared character by character.
    public func range(ofLiteral needle: String) -> Range<Index>? {
        var i = startIndex
        while i < endIndex {
            if self[i...].hasPrefix(needle) { return i..<index(i, offsetBy: needle.count) }
            i = index(after: i)
        }
        return nil
    }
}
