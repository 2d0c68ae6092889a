import Domain

/// SplitMix64: small, fast, and the same sequence for the same seed on every platform.
public struct SeededRandom: Sendable {
    private var state: UInt64
    public init(seed: UInt64) { state = seed }
    public mutating func next() -> UInt64 {
        state &+= 0x9E37_79B9_7F4A_7C15
        var z = state
        z = (z ^ (z >> 30)) &* 0xBF58_476D_1CE4_E5B9
        z = (z ^ (z >> 27)) &* 0x94D0_49BB_1331_11EB
        return z ^ (z >> 31)
    }
    /// Uniform in [0, 1).
    public mutating func unit() -> Double { Double(next() >> 11) * (1.0 / 9_007_199_254_740_992.0) }
}

/// One generation from the built-in model. Pure and synchronous: the caller decides the pace.
public struct BuiltinGeneration: Sendable {
    public enum Step: Sendable, Equatable {
        case token(String)
        case finished(FinishReason)
    }

    let model: NGramModel
    let parameters: GenerationParameters
    public let promptTokens: Int
    private var rng: SeededRandom
    private var history: (Int32, Int32, Int32)
    private var scratch: [(token: Int32, p: Float)] = []
    private var logits: [Double] = []
    private var lastText: String?
    private var generated = 0
    private var counts: [Int32: Int] = [:]
    private var promptWords: Set<Int32> = []
    private var finished = false
    private var stopFilter: StopFilter
    /// Prompt words get a small boost so the answer stays on the prompt's topic.
    static let topicBoost: Double = 1.2

    public init(model: NGramModel, prompt: String, parameters: GenerationParameters, seed: UInt64) {
        self.model = model
        self.parameters = parameters
        rng = SeededRandom(seed: seed)
        stopFilter = StopFilter(stops: parameters.stop)
        let words = Tokenizer.split(prompt)
        promptTokens = words.count
        var known: [Int32] = []
        for w in words {
            let ids = model.ids(for: w)
            if let first = ids.first { known.append(first) }
            for i in ids where model.text(i).count > 3 { promptWords.insert(i) }
        }
        // Continue from the prompt's last known words; a prompt the model has never seen starts a sentence.
        let eot = NGramModel.endOfText
        history = (known.count >= 3 ? known[known.count - 3] : eot, known.count >= 2 ? known[known.count - 2] : eot, known.last ?? eot)
        if let last = words.last, model.ids(for: last).isEmpty { history = (eot, eot, eot) }
        lastText = prompt.isEmpty || prompt.last?.isWhitespace == true ? nil : (words.last ?? nil)
    }

    public var completionTokens: Int { generated }

    public mutating func next() -> Step {
        if finished { return .finished(.stop) }
        while true {
            if generated >= parameters.maxTokens {
                finished = true
                return .finished(.length)
            }
            let tok = sample()
            if tok == NGramModel.endOfText {
                finished = true
                let rest = stopFilter.flush()
                return rest.isEmpty ? .finished(.stop) : .token(rest)
            }
            generated += 1
            counts[tok, default: 0] += 1
            history = (history.1, history.2, tok)
            let word = model.text(tok)
            let piece = Tokenizer.rendered(word, after: lastText)
            lastText = word
            let (emit, stopped) = stopFilter.feed(piece)
            if stopped {
                finished = true
                if !emit.isEmpty { return .token(emit) }
                return .finished(.stop)
            }
            if generated >= parameters.maxTokens {
                let tail = stopFilter.flush()
                return .token(emit + tail)
            }
            if !emit.isEmpty { return .token(emit) }
            // Everything was held back as a possible stop prefix: draw the next token.
        }
    }


    /// Chooses the next token: interpolated n-gram probabilities, the topic boost and the
    /// penalties make logits; temperature 0 takes the best one, otherwise softmax with the
    /// temperature, then nucleus (top_p) sampling with the seeded generator.
    private mutating func sample() -> Int32 {
        model.candidates(history: history, into: &scratch)
        if generated == 0 {
            // An answer has at least one token: the end of text is not a candidate for the first
            // one (a penalty only made it rare). If it was the only candidate, start a sentence.
            scratch.removeAll { $0.token == NGramModel.endOfText }
            if scratch.isEmpty {
                let eot = NGramModel.endOfText
                model.candidates(history: (eot, eot, eot), into: &scratch)
                scratch.removeAll { $0.token == eot }
            }
        }
        logits.removeAll(keepingCapacity: true)
        for c in scratch {
            var l = Double(c.p).log()
            if promptWords.contains(c.token) { l += BuiltinGeneration.topicBoost }
            if let n = counts[c.token] {
                l -= parameters.presencePenalty + parameters.frequencyPenalty * Double(n)
            }
            if c.token == NGramModel.endOfText && generated < 3 { l -= 5 }  // no two-word answers either, mostly
            logits.append(l)
        }
        if parameters.temperature == 0 || scratch.count == 1 {
            var best = 0
            for k in 1..<max(1, logits.count) where logits[k] > logits[best] { best = k }
            return scratch[best].token
        }
        let maxL = logits.max() ?? 0
        var total = 0.0
        for k in logits.indices {
            logits[k] = ((logits[k] - maxL) / parameters.temperature).exp()
            total += logits[k]
        }
        for k in logits.indices { logits[k] /= total }
        var order = Array(logits.indices)
        order.sort { logits[$0] > logits[$1] || (logits[$0] == logits[$1] && $0 < $1) }
        var kept = 0
        var cumulative = 0.0
        for k in order {
            kept += 1
            cumulative += logits[k]
            if cumulative >= parameters.topP { break }
        }
        let r = rng.unit() * cumulative
        var acc = 0.0
        for k in order.prefix(kept) {
            acc += logits[k]
            if r < acc { return scratch[k].token }
        }
        return scratch[order[kept - 1]].token
    }
}

extension Double {
    func log() -> Double { Foundation_log(self) }
    func exp() -> Double { Foundation_exp(self) }
}
