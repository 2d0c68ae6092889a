import Domain

/// A word 4-gram language model, interpolated with trigram, bigram and unigram estimates, trained
/// at start-up from `BuiltinCorpus`. Small, deterministic for a given seed, and honest about its
/// parameters: temperature, top_p, penalties, max_tokens, stop and seed all change what it writes.
public final class NGramModel: Sendable {
    public static let endOfText: Int32 = 0
    let vocabulary: [String]
    let index: [String: Int32]
    let lowerIndex: [String: [Int32]]
    /// Continuations by context: key is the context's token ids packed 21 bits each.
    let contexts: [[UInt64: Context]]  // [order-1] for orders 2, 3, 4
    let unigramTotal: Float
    let unigramCounts: [Float]
    let sentenceStarts: Context

    struct Context: Sendable {
        let tokens: [Int32]
        let counts: [Float]
        let total: Float
    }

    public init(corpus: String = BuiltinCorpus.text) {
        var vocab = ["<eot>"]
        var index: [String: Int32] = ["<eot>": 0]
        func id(_ t: String) -> Int32 {
            if let i = index[t] { return i }
            let i = Int32(vocab.count)
            vocab.append(t)
            index[t] = i
            return i
        }
        var tables: [[UInt64: [Int32: Int]]] = [[:], [:], [:]]
        var uni: [Int32: Int] = [:]
        var starts: [Int32: Int] = [:]
        for paragraph in corpus.split(separator: "\n", omittingEmptySubsequences: true) {
            let toks = Tokenizer.split(String(paragraph)).map(id) + [NGramModel.endOfText]
            var history: [Int32] = [NGramModel.endOfText, NGramModel.endOfText, NGramModel.endOfText]
            for t in toks {
                if history.last == NGramModel.endOfText || vocab[Int(history.last!)] == "." { starts[t, default: 0] += 1 }
                uni[t, default: 0] += 1
                for order in 1...3 {
                    tables[order - 1][NGramModel.key(history.suffix(order)), default: [:]][t, default: 0] += 1
                }
                history.removeFirst()
                history.append(t)
            }
        }
        func context(_ d: [Int32: Int]) -> Context {
            let sorted = d.sorted { $0.key < $1.key }
            return Context(tokens: sorted.map(\.key), counts: sorted.map { Float($0.value) }, total: Float(d.values.reduce(0, +)))
        }
        vocabulary = vocab
        self.index = index
        var lower: [String: [Int32]] = [:]
        for (i, w) in vocab.enumerated() { lower[w.lowercased(), default: []].append(Int32(i)) }
        lowerIndex = lower
        contexts = tables.map { $0.mapValues(context) }
        var counts = [Float](repeating: 0, count: vocab.count)
        for (t, c) in uni { counts[Int(t)] = Float(c) }
        unigramCounts = counts
        unigramTotal = Float(uni.values.reduce(0, +))
        sentenceStarts = context(starts)
    }

    static func key<C: Collection>(_ ids: C) -> UInt64 where C.Element == Int32 {
        var k: UInt64 = UInt64(ids.count)
        for i in ids { k = k << 21 | UInt64(UInt32(bitPattern: i) & 0x1F_FFFF) }
        return k
    }

    public var vocabularySize: Int { vocabulary.count }

    func text(_ t: Int32) -> String { vocabulary[Int(t)] }

    /// Known token ids for a word of the prompt, matching case-insensitively.
    func ids(for word: String) -> [Int32] {
        if let i = index[word] { return [i] }
        return lowerIndex[word.lowercased()] ?? []
    }

    /// Interpolation weights for the 4-, 3- and 2-gram estimates and the unigram floor.
    static let weights: [Float] = [0.1, 0.25, 0.6]  // order 1 (bigram), 2, 3 (4-gram)
    static let unigramWeight: Float = 0.05

    /// Candidate next tokens with interpolated probabilities (not normalised over the vocabulary:
    /// only tokens seen after some suffix of the history are candidates).
    func candidates(history h: (Int32, Int32, Int32), into out: inout [(token: Int32, p: Float)]) {
        out.removeAll(keepingCapacity: true)
        if h.2 == NGramModel.endOfText && h.1 == NGramModel.endOfText {
            for (k, t) in sentenceStarts.tokens.enumerated() { out.append((t, sentenceStarts.counts[k] / sentenceStarts.total)) }
            return
        }
        var found: [Context?] = [nil, nil, nil]
        found[0] = contexts[0][NGramModel.key([h.2])]
        found[1] = contexts[1][NGramModel.key([h.1, h.2])]
        found[2] = contexts[2][NGramModel.key([h.0, h.1, h.2])]
        var weightSum = NGramModel.unigramWeight
        for o in 0..<3 where found[o] != nil { weightSum += NGramModel.weights[o] }
        // Candidates come from the longest contexts that exist; shorter ones add mass to them.
        for o in stride(from: 2, through: 0, by: -1) {
            guard let c = found[o] else { continue }
            for t in c.tokens where !out.contains(where: { $0.token == t }) { out.append((t, 0)) }
            if out.count >= 2 { break }
        }
        if out.isEmpty {
            for (k, t) in sentenceStarts.tokens.enumerated() { out.append((t, sentenceStarts.counts[k] / sentenceStarts.total)) }
            return
        }
        for k in out.indices {
            let t = out[k].token
            var p = NGramModel.unigramWeight * unigramCounts[Int(t)] / unigramTotal
            for o in 0..<3 {
                guard let c = found[o], let i = c.tokens.firstIndex(of: t) else { continue }
                p += NGramModel.weights[o] * c.counts[i] / c.total
            }
            out[k].p = p / weightSum
        }
    }
}

/// Words, numbers and single punctuation marks; whitespace separates and is dropped.
public enum Tokenizer {
    public static func split(_ s: String) -> [String] {
        var out: [String] = []
        var word = ""
        for ch in s {
            if ch.isLetter || ch.isNumber || ch == "'" || ch == "’" {
                word.append(ch)
            } else {
                if !word.isEmpty { out.append(word); word = "" }
                if !ch.isWhitespace { out.append(String(ch)) }
            }
        }
        if !word.isEmpty { out.append(word) }
        return out
    }

    /// How a token is written after the text so far: a space before words, none before closing
    /// punctuation or after an opening bracket.
    static func rendered(_ token: String, after previous: String?) -> String {
        guard let previous else { return token }
        if let f = token.first, ".,;:!?)]}%".contains(f) { return token }
        if previous == "(" || previous == "[" || previous == "\n" { return token }
        return " " + token
    }
}
