import JSON

/// Generation parameters after validation, with defaults filled in.
public struct GenerationParameters: Equatable, Sendable {
    public var model: String
    public var temperature: Double
    public var topP: Double
    public var maxTokens: Int
    public var stop: [String]
    public var presencePenalty: Double
    public var frequencyPenalty: Double
    public var seed: UInt64?

    public init(model: String, temperature: Double = 1, topP: Double = 1, maxTokens: Int = 256, stop: [String] = [],
                presencePenalty: Double = 0, frequencyPenalty: Double = 0, seed: UInt64? = nil) {
        self.model = model
        self.temperature = temperature
        self.topP = topP
        self.maxTokens = maxTokens
        self.stop = stop
        self.presencePenalty = presencePenalty
        self.frequencyPenalty = frequencyPenalty
        self.seed = seed
    }
}

/// The limits and defaults parameter validation applies.
public struct ParameterPolicy: Sendable {
    public var defaultModel: String
    public var knownModels: [String]
    public var maxTokensCap: Int
    public var defaultMaxTokens: Int
    public var maxStopSequences = 4
    public var maxStopLength = 256
    /// Models served by upstream model servers (aliases with an upstream in them): their requests
    /// are forwarded as sent, so fields only the built-in model cannot honour (tools, n > 1, …)
    /// are the upstream's to judge.
    public var upstreamModels: Set<String> = []
    /// Choices one request may ask an upstream model for, at most (the operator may set fewer).
    public static let maxChoices = 8
    public var choicesCap = ParameterPolicy.maxChoices
    /// Fields the operator does not forward to model servers: refused naming them.
    public var deniedFields: Set<String> = []

    public init(defaultModel: String, knownModels: [String], maxTokensCap: Int = 2048, defaultMaxTokens: Int = 256) {
        self.defaultModel = defaultModel
        self.knownModels = knownModels
        self.maxTokensCap = maxTokensCap
        self.defaultMaxTokens = min(defaultMaxTokens, maxTokensCap)
    }

    /// Reads parameters from a request body (or a preset's stored parameters, with `base`).
    /// Absent or null fields keep the base/default; present ones must be valid, else the error
    /// names the field. Unknown fields are ignored, as the OpenAI API does.
    public func parameters(from body: JSONObject, base: GenerationParameters? = nil) throws(APIError) -> GenerationParameters {
        var p = base ?? GenerationParameters(model: defaultModel, maxTokens: defaultMaxTokens)
        if let v = present(body, "model") {
            guard let m = v.stringValue, !m.isEmpty else { throw .invalid("model", "model must be a non-empty string") }
            guard knownModels.contains(m) else {
                throw .invalid("model", "unknown model '\(m.prefix(100))'; available: \(knownModels.joined(separator: ", "))")
            }
            p.model = m
        }
        if let v = present(body, "temperature") {
            p.temperature = try number(v, "temperature", 0...2, "between 0 and 2")
        }
        if let v = present(body, "top_p") {
            let t = try number(v, "top_p", 0...1, "greater than 0 and at most 1")
            guard t > 0 else { throw .invalid("top_p", "top_p must be greater than 0 and at most 1") }
            p.topP = t
        }
        // OpenAI's newer name for the same limit; max_tokens wins when both are given.
        for field in ["max_completion_tokens", "max_tokens"] {
            if let v = present(body, field) {
                guard let n = v.intValue else { throw .invalid(field, "\(field) must be an integer") }
                guard n >= 1 && n <= maxTokensCap else { throw .invalid(field, "\(field) must be between 1 and \(maxTokensCap)") }
                p.maxTokens = n
            }
        }
        if let v = present(body, "stop") {
            var stops: [String]
            switch v {
            case .string(let s): stops = [s]
            case .array(let a):
                guard a.count <= maxStopSequences else { throw .invalid("stop", "stop takes at most \(maxStopSequences) sequences") }
                stops = []
                for x in a {
                    guard let s = x.stringValue else { throw .invalid("stop", "stop must be a string or an array of strings") }
                    stops.append(s)
                }
            default: throw .invalid("stop", "stop must be a string or an array of strings")
            }
            for s in stops {
                guard !s.isEmpty else { throw .invalid("stop", "stop sequences must not be empty") }
                guard s.utf8.count <= maxStopLength else { throw .invalid("stop", "stop sequences must be at most \(maxStopLength) bytes") }
            }
            p.stop = stops
        }
        if let v = present(body, "presence_penalty") {
            p.presencePenalty = try number(v, "presence_penalty", -2...2, "between -2 and 2")
        }
        if let v = present(body, "frequency_penalty") {
            p.frequencyPenalty = try number(v, "frequency_penalty", -2...2, "between -2 and 2")
        }
        if let v = present(body, "seed") {
            guard let n = v.intValue else { throw .invalid("seed", "seed must be an integer between -2^53 and 2^53") }
            p.seed = UInt64(bitPattern: Int64(n))
        }
        if let v = present(body, "n") {
            if upstreamModels.contains(p.model) {
                guard let n = v.intValue, (1...choicesCap).contains(n) else {
                    throw .invalid("n", "n must be an integer between 1 and \(choicesCap)")
                }
            } else {
                guard v.intValue == 1 else { throw .invalid("n", "the built-in model gives one choice: n must be 1") }
            }
        }
        return p
    }

    private func present(_ o: JSONObject, _ k: String) -> JSONValue? {
        guard let v = o[k], !v.isNull else { return nil }
        return v
    }

    private func number(_ v: JSONValue, _ field: String, _ range: ClosedRange<Double>, _ words: String) throws(APIError) -> Double {
        guard let d = v.doubleValue else { throw .invalid(field, "\(field) must be a number \(words)") }
        guard range.contains(d) else { throw .invalid(field, "\(field) must be \(words)") }
        return d
    }

    /// Parameters as JSON (for presets and the page).
    public static func write(_ p: GenerationParameters, to w: inout JSONWriter) {
        w.beginObject()
        w.key("model"); w.string(p.model)
        w.key("temperature"); w.double(p.temperature)
        w.key("top_p"); w.double(p.topP)
        w.key("max_tokens"); w.int(p.maxTokens)
        w.key("stop"); w.beginArray(); for s in p.stop { w.string(s) }; w.endArray()
        w.key("presence_penalty"); w.double(p.presencePenalty)
        w.key("frequency_penalty"); w.double(p.frequencyPenalty)
        w.key("seed")
        if let s = p.seed { w.int(Int(Int64(bitPattern: s))) } else { w.null() }
        w.endObject()
    }
}
