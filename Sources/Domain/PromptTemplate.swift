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
        for name in values.keys.sorted() where !variables.contains(name) || name == PromptTemplate.input {
            throw .invalid("variables.\(name)", name == PromptTemplate.input
                           ? "{{input}} takes input_context, not variables"
                           : "the preset has no variable '\(name)'; it has: \(variables.filter { $0 != PromptTemplate.input }.joined(separator: ", "))")
        }
        for name in variables where name != PromptTemplate.input && values[name] == nil {
            throw .invalid("variables.\(name)", "the preset's prompt needs the variable '\(name)'")
        }
        let inputText = input ?? ""
        var size = 0
        var overflow = false
        func add(_ n: Int) {
            let (s, o) = size.addingReportingOverflow(n)
            size = s
            overflow = overflow || o
        }
        for p in pieces {
            switch p {
            case .text(let t): add(t.count)
            case .variable(let n): add(n == PromptTemplate.input ? inputText.utf8.count : values[n]!.utf8.count)
            }
        }
        let appendsInput = !hasInput && !inputText.isEmpty
        if appendsInput { add((size > 0 ? 2 : 0) + inputText.utf8.count) }
        guard !overflow, size <= maxBytes else {
            throw .invalid(appendsInput || hasInput ? "input_context" : "variables",
                           "the preset's prompt with these values would be \(overflow ? "over \(Int.max)" : "\(size)") bytes; the limit is \(maxBytes) bytes")
        }
        var out: [UInt8] = []
        out.reserveCapacity(size)
        for p in pieces {
            switch p {
            case .text(let t): out.append(contentsOf: t)
            case .variable(let n): out.append(contentsOf: (n == PromptTemplate.input ? inputText : values[n]!).utf8)
            }
        }
        if appendsInput {
            if !out.isEmpty { out.append(contentsOf: [10, 10]) }
            out.append(contentsOf: inputText.utf8)
        }
        return String(decoding: out, as: UTF8.self)
    }
}
