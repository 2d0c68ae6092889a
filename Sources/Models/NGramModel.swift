import Domain

/// A word 4-gram language model, interpolated with trigram, bigram and unigram estimates, trained
/// at start-up from `BuiltinCorpus`. Small, deterministic for a given seed, and honest about its
/// parameters: temperature, top_p, penalties, max_tokens, stop and seed all change what it writes.
public final class NGramModel: Sendable {
    public static let endOfText: Int32 = 0
    let vocabulary: [String]
    let index: [String: Int32]
    let lowerIndex: [String: [Int32]]
    /// Continuations by context, for orders 2, 3 and 4 (`contexts[order - 2]`): the key packs the
    /// context's token ids 21 bits each; the value is a span of the flat arrays below. Flat storage
    /// keeps the per-token path free of allocations and reference counting.
    let contexts: [[UInt64: Context]]
    /// Continuation token ids, sorted ascending within each context's span (binary-searched).
    let flatTokens: [Int32]
    let flatCounts: [Float]
    let unigramTotal: Float
    let unigramCounts: [Float]
    let sentenceStarts: Context

    struct Context: Sendable {
        let start: Int32
        let count: Int32
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
        var flatTokens: [Int32] = [], flatCounts: [Float] = []
        func context(_ d: [Int32: Int]) -> Context {
            let sorted = d.sorted { $0.key < $1.key }
            let c = Context(start: Int32(flatTokens.count), count: Int32(sorted.count), total: Float(d.values.reduce(0, +)))
            flatTokens.append(contentsOf: sorted.map(\.key))
            flatCounts.append(contentsOf: sorted.map { Float($0.value) })
            return c
        }
        vocabulary = vocab
        self.index = index
        var lower: [String: [Int32]] = [:]
        for (i, w) in vocab.enumerated() { lower[w.lowercased(), default: []].append(Int32(i)) }
        lowerIndex = lower
        contexts = tables.map { $0.mapValues(context) }
        let startContext = context(starts)
        self.flatTokens = flatTokens
        self.flatCounts = flatCounts
        var counts = [Float](repeating: 0, count: vocab.count)
        for (t, c) in uni { counts[Int(t)] = Float(c) }
        unigramCounts = counts
        unigramTotal = Float(uni.values.reduce(0, +))
        sentenceStarts = startContext
    }

    static func key<C: Collection>(_ ids: C) -> UInt64 where C.Element == Int32 {
        var k: UInt64 = UInt64(ids.count)
        for i in ids { k = k << 21 | UInt64(UInt32(bitPattern: i) & 0x1F_FFFF) }
        return k
    }

    // The same packing without building an array: the per-token path must not allocate.
    @inline(__always) static func bits(_ a: Int32) -> UInt64 { UInt64(UInt32(bitPattern: a) & 0x1F_FFFF) }
    @inline(__always) static func key(_ a: Int32) -> UInt64 { 1 << 21 | bits(a) }
    @inline(__always) static func key(_ a: Int32, _ b: Int32) -> UInt64 { (2 << 21 | bits(a)) << 21 | bits(b) }
    @inline(__always) static func key(_ a: Int32, _ b: Int32, _ c: Int32) -> UInt64 { ((3 << 21 | bits(a)) << 21 | bits(b)) << 21 | bits(c) }

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
    /// only tokens seen after some suffix of the history are candidates). Allocation-free once
    /// `out` has grown; context look-ups are three hash probes, continuation look-ups binary searches.
    func candidates(history h: (Int32, Int32, Int32), into out: inout [(token: Int32, p: Float)]) {
        out.removeAll(keepingCapacity: true)
        flatTokens.withUnsafeBufferPointer { tokens in
            flatCounts.withUnsafeBufferPointer { counts in
                if h.2 == NGramModel.endOfText && h.1 == NGramModel.endOfText {
                    let c = sentenceStarts
                    for k in Int(c.start)..<Int(c.start + c.count) { out.append((tokens[k], counts[k] / c.total)) }
                    return
                }
                let c1 = contexts[0][NGramModel.key(h.2)]
                let c2 = contexts[1][NGramModel.key(h.1, h.2)]
                let c3 = contexts[2][NGramModel.key(h.0, h.1, h.2)]
                var weightSum = NGramModel.unigramWeight
                if c1 != nil { weightSum += NGramModel.weights[0] }
                if c2 != nil { weightSum += NGramModel.weights[1] }
                if c3 != nil { weightSum += NGramModel.weights[2] }
                // Candidates come from the longest context that offers at least two; shorter ones add mass.
                for order in stride(from: 2, through: 0, by: -1) {
                    guard let c = order == 2 ? c3 : (order == 1 ? c2 : c1) else { continue }
                    let span = Int(c.start)..<Int(c.start + c.count)
                    if out.isEmpty {
                        // Tokens within one context are distinct: no duplicate check needed.
                        for k in span { out.append((tokens[k], 0)) }
                    } else {
                        for k in span where !out.contains(where: { $0.token == tokens[k] }) { out.append((tokens[k], 0)) }
                    }
                    if out.count >= 2 { break }
                }
                if out.isEmpty {
                    let c = sentenceStarts
                    for k in Int(c.start)..<Int(c.start + c.count) { out.append((tokens[k], counts[k] / c.total)) }
                    return
                }
                @inline(__always) func mass(_ c: Context?, _ w: Float, _ t: Int32) -> Float {
                    guard let c else { return 0 }
                    var lo = Int(c.start), hi = Int(c.start + c.count)
                    while lo < hi {
                        let mid = (lo + hi) >> 1
                        if tokens[mid] < t { lo = mid + 1 } else { hi = mid }
                    }
                    return lo < Int(c.start + c.count) && tokens[lo] == t ? w * counts[lo] / c.total : 0
                }
                for k in out.indices {
                    let t = out[k].token
                    var p = NGramModel.unigramWeight * unigramCounts[Int(t)] / unigramTotal
                    p += mass(c1, NGramModel.weights[0], t) + mass(c2, NGramModel.weights[1], t) + mass(c3, NGramModel.weights[2], t)
                    out[k].p = p / weightSum
                }
            }
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
