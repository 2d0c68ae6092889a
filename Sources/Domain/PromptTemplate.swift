/// A preset's prompt as a template (pure): `{{name}}` placeholders — a name of letters, digits and
/// `_` (1–64) — take the run's values; `\{{` writes a literal `{{`; anything else between braces
/// (`{{ spaced }}`, `{{a-b}}`) is text. `{{input}}` takes `input_context`, as it always did.
/// Matching bytes is exact for UTF-8: the syntax is ASCII, and ASCII bytes never occur inside a
/// multi-byte character.
public struct PromptTemplate: Sendable {
    enum Piece: Sendable, Equatable {
        case text(ArraySlice<UInt8>)
        case variable(String)
    }

    let pieces: [Piece]
    /// Its variables, each once, in the order they first appear.
    public let variables: [String]

    public static let input = "input"
    static let maxName = 64

    public init(_ prompt: String) {
        let b = Array(prompt.utf8)
        var pieces: [Piece] = []
        var names: [String] = []
        var from = 0
        var i = 0
        func flush(_ end: Int) { if end > from { pieces.append(.text(b[from..<end])) } }
        while i + 1 < b.count {
            if b[i] == UInt8(ascii: "\\") && b[i + 1] == UInt8(ascii: "{") && i + 2 < b.count && b[i + 2] == UInt8(ascii: "{") {
                // `\{{`: the backslash goes, the braces stay text.
                flush(i)
                from = i + 1
                i += 3
                continue
            }
            if b[i] == UInt8(ascii: "{") && b[i + 1] == UInt8(ascii: "{"), let (name, end) = PromptTemplate.name(b, at: i + 2) {
                flush(i)
                pieces.append(.variable(name))
                if !names.contains(name) { names.append(name) }
                i = end
                from = end
                continue
            }
            i += 1
        }
        flush(b.count)
        self.pieces = pieces
        variables = names
    }

    /// A name and the index after its `}}`, if `b[at...]` is `name}}`.
    static func name(_ b: [UInt8], at: Int) -> (String, Int)? {
        var j = at
        while j < b.count, j - at <= maxName, isNameByte(b[j]) { j += 1 }
        guard j > at, j - at <= maxName, j + 1 < b.count, b[j] == UInt8(ascii: "}"), b[j + 1] == UInt8(ascii: "}") else { return nil }
        return (String(decoding: b[at..<j], as: UTF8.self), j + 2)
    }

    static func isNameByte(_ c: UInt8) -> Bool {
        (c >= 48 && c <= 57) || (c >= 65 && c <= 90) || (c >= 97 && c <= 122) || c == UInt8(ascii: "_")
    }

    public var hasInput: Bool { variables.contains(PromptTemplate.input) }

    /// The prompt with `values` in its placeholders; `input` goes to `{{input}}`, or after a blank
    /// line if there is none. A variable without a value is 400 naming it (`variables.audience`);
    /// a value for a variable the prompt does not have, too (a typo would otherwise pass
    /// silently). The size is computed before anything is built: past `maxBytes` this throws.
    public func render(values: [String: String], input: String?, maxBytes: Int = .max) throws(APIError) -> String {
        try PromptTemplate.check(values, against: variables)
        let inputText = input ?? ""
        var size = Size()
        measure(values, inputText, &size)
        let appendsInput = !hasInput && !inputText.isEmpty
        if appendsInput { size.add((size.bytes > 0 ? 2 : 0) + inputText.utf8.count) }
        try size.check(maxBytes, field: appendsInput || hasInput ? "input_context" : "variables")
        var out: [UInt8] = []
        out.reserveCapacity(size.bytes)
        fill(values, inputText, into: &out)
        if appendsInput {
            if !out.isEmpty { out.append(contentsOf: [10, 10]) }
            out.append(contentsOf: inputText.utf8)
        }
        return String(decoding: out, as: UTF8.self)
    }

    /// Every value names a variable there is (not `input`), and every variable but `input` has one.
    static func check(_ values: [String: String], against variables: [String]) throws(APIError) {
        for name in values.keys.sorted() where !variables.contains(name) || name == PromptTemplate.input {
            throw .invalid("variables.\(name)", name == PromptTemplate.input
                           ? "{{input}} takes input_context, not variables"
                           : "the preset has no variable '\(name)'; it has: \(variables.filter { $0 != PromptTemplate.input }.joined(separator: ", "))")
        }
        for name in variables where name != PromptTemplate.input && values[name] == nil {
            throw .invalid("variables.\(name)", "the preset's prompt needs the variable '\(name)'")
        }
    }

    /// A size in bytes that remembers overflowing instead of trapping.
    struct Size {
        var bytes = 0
        var overflow = false
        mutating func add(_ n: Int) {
            let (s, o) = bytes.addingReportingOverflow(n)
            bytes = s
            overflow = overflow || o
        }
        func check(_ maxBytes: Int, field: String) throws(APIError) {
            guard !overflow, bytes <= maxBytes else {
                throw .invalid(field, "the preset's prompt with these values would be \(overflow ? "over \(Int.max)" : "\(bytes)") bytes; the limit is \(maxBytes) bytes")
            }
        }
    }

    /// The size of the filled template (values already checked).
    func measure(_ values: [String: String], _ inputText: String, _ size: inout Size) {
        for p in pieces {
            switch p {
            case .text(let t): size.add(t.count)
            case .variable(let n): size.add(n == PromptTemplate.input ? inputText.utf8.count : values[n]!.utf8.count)
            }
        }
    }

    func fill(_ values: [String: String], _ inputText: String, into out: inout [UInt8]) {
        for p in pieces {
            switch p {
            case .text(let t): out.append(contentsOf: t)
            case .variable(let n): out.append(contentsOf: (n == PromptTemplate.input ? inputText : values[n]!).utf8)
            }
        }
    }
}

/// A chat preset's messages as templates: the same placeholders in every message's content.
/// `input` goes to `{{input}}` wherever it is, or, if no message has one, becomes a last user turn.
public struct ChatTemplate: Sendable {
    let turns: [(role: String, template: PromptTemplate)]
    /// The messages' variables, each once, in the order they first appear.
    public let variables: [String]

    public init(_ messages: [ChatTurn]) {
        turns = messages.map { ($0.role, PromptTemplate($0.content)) }
        var names: [String] = []
        for t in turns { for v in t.template.variables where !names.contains(v) { names.append(v) } }
        variables = names
    }

    public var hasInput: Bool { variables.contains(PromptTemplate.input) }

    /// The messages filled in; sizes (the sum over all messages) are computed before any is built.
    public func render(values: [String: String], input: String?, maxBytes: Int = .max) throws(APIError) -> [ChatTurn] {
        try PromptTemplate.check(values, against: variables)
        let inputText = input ?? ""
        var size = PromptTemplate.Size()
        for t in turns { t.template.measure(values, inputText, &size) }
        let appendsInput = !hasInput && !inputText.isEmpty
        if appendsInput { size.add(inputText.utf8.count) }
        try size.check(maxBytes, field: appendsInput || hasInput ? "input_context" : "variables")
        var out: [ChatTurn] = []
        for t in turns {
            var bytes: [UInt8] = []
            t.template.fill(values, inputText, into: &bytes)
            out.append(ChatTurn(role: t.role, content: String(decoding: bytes, as: UTF8.self)))
        }
        if appendsInput { out.append(ChatTurn(role: "user", content: inputText)) }
        return out
    }
}
