/// Typo-tolerant preset search, as a search engine's fuzzy matching does it: every query word is
/// matched against the words of the user's presets (their dictionary) within an edit distance in
/// the spirit of Elasticsearch's `AUTO` fuzziness — 0 edits under 3 letters, 1 for 3–5, 2 from 6,
/// a swap of two neighbours counting as one (optimal string alignment) — the last query word also
/// as a prefix within one edit (search as you type), and any word of 3 letters or more also inside
/// a longer word.
/// Presets are ranked by how many query words they match, then by how well, not all-or-nothing.
///
/// Two places run these rules and must agree: the database (PresetRepository fetches the user's
/// dictionary, expands the query here, and scores in SQL by `SearchScore`'s arithmetic) and the
/// degraded search over the shared cache while the database is down (`PresetSearch.page`, all in
/// memory). Both see the same words: `SearchWords.of` splits text as the database's
/// `preset_search_words()` does (sql/004_typo_search.sql).
public enum SearchWords {
    /// Longer runs (hashes, base64) are not words anyone types.
    public static let maxLength = 40

    /// Lowercased runs of letters and digits of 1–40 characters, distinct, in first-seen order.
    /// As glibc's C.UTF-8 classes see them (what PostgreSQL's lower() and `[[:alnum:]]` use):
    /// letters are the Unicode Alphabetic property (with combining vowel signs; not a lone accent
    /// like U+0301), digits the decimal ones (not ², ½, ①); lowercase is per character, one
    /// character to one (İ → i, not i + a combining dot; a final Σ → σ).
    public static func of(_ text: String) -> [String] {
        var out: [String] = []
        var seen = Set<String>()
        var word = String.UnicodeScalarView()
        func flush() {
            if !word.isEmpty, word.count <= maxLength {
                let w = String(word)
                if seen.insert(w).inserted { out.append(w) }
            }
            word.removeAll(keepingCapacity: true)
        }
        for s in text.unicodeScalars {
            if isWordCharacter(s) { word.append(lower(s)) } else { flush() }
        }
        flush()
        return out
    }

    static func isWordCharacter(_ s: Unicode.Scalar) -> Bool { s.properties.isAlphabetic || s.properties.generalCategory == .decimalNumber }

    /// The simple (one-to-one) lowercase of a character, as towlower gives it (İ → i, the first
    /// of its full mapping).
    static func lower(_ s: Unicode.Scalar) -> Unicode.Scalar {
        if s.isASCII { return s.value >= 65 && s.value <= 90 ? Unicode.Scalar(s.value + 32)! : s }
        guard s.properties.changesWhenLowercased else { return s }
        return s.properties.lowercaseMapping.unicodeScalars.first ?? s
    }

    /// Whether `needle` occurs in `haystack`, byte for byte (as PostgreSQL's strpos compares).
    public static func containsBytes(_ haystack: String, _ needle: String) -> Bool { contains(Array(haystack.utf8), Array(needle.utf8)) }

    /// Whether `needle` occurs in `haystack` as a run.
    static func contains<T: Equatable>(_ haystack: [T], _ needle: [T]) -> Bool {
        guard let first = needle.first else { return true }
        guard haystack.count >= needle.count else { return false }
        for i in 0...(haystack.count - needle.count) where haystack[i] == first && haystack[i..<(i + needle.count)].elementsEqual(needle) {
            return true
        }
        return false
    }

    /// What the literal (punctuation) part of a query is looked for in: name, tags and description,
    /// lowercased as the database does.
    public static func document(_ p: Preset) -> String { lowered(p.name + " " + p.tags.joined(separator: " ") + " " + p.description) }

    public static func lowered(_ text: String) -> String {
        var out = String.UnicodeScalarView()
        for s in text.unicodeScalars { out.append(lower(s)) }
        return String(out)
    }

    /// The words of the name and tags (worth twice those of the description alone).
    public static func title(_ p: Preset) -> [String] { of(p.name + " " + p.tags.joined(separator: " ")) }

    public static func all(_ p: Preset) -> [String] { of(p.name + " " + p.tags.joined(separator: " ") + " " + p.description) }
}

/// Bounded optimal-string-alignment distance (Damerau–Levenshtein where no substring is edited
/// twice): insertions, deletions, substitutions and swaps of two neighbours cost 1 each.
public enum EditDistance {
    /// Elasticsearch's AUTO: the edits a query word of this many characters may be off by.
    public static func allowed(length: Int) -> Int { length < 3 ? 0 : length < 6 ? 1 : 2 }

    /// The distance between `a` and `b` if ≤ `bound`; with `prefix`, between `a` and the closest
    /// prefix of `b` (a half-typed word against the word it begins). nil: more than `bound`.
    public static func distance(_ a: [Unicode.Scalar], _ b: [Unicode.Scalar], bound: Int, prefix: Bool = false) -> Int? {
        let m = a.count, n = b.count
        if !prefix && abs(m - n) > bound { return nil }
        if prefix && n < m - bound { return nil }
        if m == 0 { return prefix ? 0 : (n <= bound ? n : nil) }
        // Three rows of the DP table: before last, last, current (column j = first j of b).
        var twoBack = [Int](repeating: 0, count: n + 1)
        var previous = Array(0...n)
        var current = [Int](repeating: 0, count: n + 1)
        for i in 1...m {
            current[0] = i
            var rowMin = i
            if n > 0 {
                for j in 1...n {
                    let cost = a[i - 1] == b[j - 1] ? 0 : 1
                    var d = min(previous[j] + 1, current[j - 1] + 1, previous[j - 1] + cost)
                    if i > 1, j > 1, a[i - 1] == b[j - 2], a[i - 2] == b[j - 1] { d = min(d, twoBack[j - 2] + 1) }
                    current[j] = d
                    rowMin = min(rowMin, d)
                }
            }
            if rowMin > bound { return nil }
            (twoBack, previous, current) = (previous, current, twoBack)
        }
        let d = prefix ? previous.min()! : previous[n]
        return d <= bound ? d : nil
    }
}

/// A parsed query: its words (each with its edit allowance) and its literal tokens.
public struct SearchQuery: Sendable {
    /// At most this many distinct words (and literal tokens) are looked for.
    public static let maxUnits = 8
    /// A query word stands for at most this many dictionary words (Elasticsearch's max_expansions).
    public static let maxExpansions = 50

    /// Points of one match, before the name/tag weighting (×2).
    public enum Points {
        public static let exact = 8
        public static let prefix = 6
        public static let oneEdit = 5
        public static let infix = 4
        public static let oneEditPrefix = 4
        public static let twoEdits = 3
        /// A literal token (no letters or digits, e.g. `%`) found in the text: as an exact word in a name.
        public static let literal = 16
    }

    public let words: [String]
    /// Tokens without letters or digits (`%`, `_`, `🦜`): found as literal substrings.
    public let literals: [String]
    /// Tokens that mix words and punctuation (`o'brien`, `50%`): found literally, they break ties.
    public let phrases: [String]

    /// nil for an empty query (or only spaces): that lists. A query of tokens none of which can
    /// match (a run of letters too long to be a word) is a query that finds nothing.
    public init?(_ query: String) {
        var words: [String] = [], literals: [String] = [], phrases: [String] = []
        let tokens = SearchWords.lowered(query).split(whereSeparator: { $0.isWhitespace }).map(String.init)
        guard !tokens.isEmpty else { return nil }
        for token in tokens {
            let inside = SearchWords.of(token)
            if inside.isEmpty {
                // Only a token of no letters or digits at all is looked for literally (a run too
                // long to be a word is no literal either: it matches nothing).
                let wordless = !token.unicodeScalars.contains(where: SearchWords.isWordCharacter)
                if wordless, words.count + literals.count < Self.maxUnits, !literals.contains(token) { literals.append(token) }
                continue
            }
            for w in inside where words.count + literals.count < Self.maxUnits && !words.contains(w) { words.append(w) }
            if inside.count > 1 || inside[0] != token, phrases.count < Self.maxUnits, !phrases.contains(token) { phrases.append(token) }
        }
        self.words = words
        self.literals = literals
        self.phrases = phrases
    }

    /// One dictionary word standing in for query word `unit`, worth `points`.
    public struct Expansion: Sendable, Equatable {
        public let word: String
        public let unit: Int
        public let points: Int
    }

    /// How `word` matches query word `q` (the last one also as a prefix); 0: not at all.
    public static func points(query q: [Unicode.Scalar], word w: [Unicode.Scalar], last: Bool) -> Int {
        if q == w { return Points.exact }
        var best = 0
        if last, w.count > q.count, Array(w.prefix(q.count)) == q { best = Points.prefix }
        let bound = EditDistance.allowed(length: q.count)
        if bound > 0, let d = EditDistance.distance(q, w, bound: bound) {
            best = max(best, d == 1 ? Points.oneEdit : Points.twoEdits)
        }
        if q.count >= 3, best < Points.infix, w.count > q.count, SearchWords.contains(w, q) { best = Points.infix }
        // A half-typed word is forgiven one edit (two would find "grocer…" for "grader").
        if last, bound > 0, best < Points.oneEditPrefix, let d = EditDistance.distance(q, w, bound: 1, prefix: true) {
            best = max(best, d == 0 ? Points.prefix : Points.oneEditPrefix)
        }
        return best
    }

    /// The dictionary words each query word stands for: per word the best `maxExpansions` (most
    /// points, then alphabetical: the same whichever side asks).
    public func expansions(dictionary: some Sequence<String>) -> [Expansion] {
        let queries = words.map { Array($0.unicodeScalars) }
        var found = [[Expansion]](repeating: [], count: words.count)
        for word in dictionary {
            let w = Array(word.unicodeScalars)
            for (u, q) in queries.enumerated() {
                let p = Self.points(query: q, word: w, last: u == queries.count - 1)
                if p > 0 { found[u].append(Expansion(word: word, unit: u, points: p)) }
            }
        }
        var out: [Expansion] = []
        for var list in found {
            list.sort { $0.points != $1.points ? $0.points > $1.points : $0.word < $1.word }
            out += list.prefix(Self.maxExpansions)
        }
        return out
    }
}

/// The score of a preset for a query: 1,000 per query unit matched (so presets matching more
/// words always come first), plus each unit's best points (doubled when the word is in the name or
/// tags), plus 1 per phrase found literally. The database computes the same sum in SQL.
public enum SearchScore {
    public static let perUnit = 1000

    public static func of(_ query: SearchQuery, expansions byWord: [String: [SearchQuery.Expansion]],
                          words: [String], title: Set<String>, document: String) -> Int {
        var best = [Int](repeating: -1, count: query.words.count)
        for w in words {
            guard let list = byWord[w] else { continue }
            let weight = title.contains(w) ? 2 : 1
            for e in list { best[e.unit] = max(best[e.unit], e.points * weight) }
        }
        var score = 0
        for b in best where b >= 0 { score += perUnit + b }
        for l in query.literals where SearchWords.containsBytes(document, l) { score += perUnit + SearchQuery.Points.literal }
        guard score > 0 else { return 0 }
        for p in query.phrases where SearchWords.containsBytes(document, p) { score += 1 }
        return score
    }

    /// As the API shows it: words matched, and how well in the fraction.
    public static func display(_ score: Int) -> Double { Double(score) / Double(perUnit) }
}

/// Preset search over presets in memory (the shared cache, while the database is down), by the
/// database's rules (see `SearchWords`). An empty query lists newest first. Pages and cursors are
/// the database's too, so a client can page on across an outage.
public enum PresetSearch {
    public struct Page: Sendable {
        public let items: [(preset: Preset, score: Double?)]
        public let nextCursor: String?
    }

    /// The page, or nil for a cursor this kind of query did not issue.
    public static func page(_ presets: [Preset], query: String, limit: Int, cursor: String?) -> Page? {
        let query = SearchQuery(query)
        let c: SearchCursor?
        do { c = try SearchCursor.continuing(cursor, kind: query == nil ? "t" : "f") } catch { return nil }
        guard let q = query else {
            var rows = presets.map { ($0, Timestamps.micros($0.createdAt) ?? 0) }
            rows.sort { a, b in a.1 != b.1 ? a.1 > b.1 : a.0.id > b.0.id }
            if let c {
                let key = Timestamps.micros(c.key) ?? 0
                rows = rows.filter { $0.1 < key || ($0.1 == key && $0.0.id < c.id) }
            }
            let items = rows.prefix(limit).map { (preset: $0.0, score: Double?.none) }
            let next = rows.count > limit ? items.last.map { SearchCursor(kind: "t", key: $0.preset.createdAt, id: $0.preset.id).encoded } : nil
            return Page(items: items, nextCursor: next)
        }
        let words = presets.map(SearchWords.all)
        var dictionary = Set<String>()
        for ws in words { dictionary.formUnion(ws) }
        let byWord = Dictionary(grouping: q.expansions(dictionary: dictionary), by: \.word)
        var rows: [(Preset, Int)] = []
        for (i, p) in presets.enumerated() {
            let s = SearchScore.of(q, expansions: byWord, words: words[i], title: Set(SearchWords.title(p)), document: SearchWords.document(p))
            if s > 0 { rows.append((p, s)) }
        }
        rows.sort { a, b in a.1 != b.1 ? a.1 > b.1 : a.0.id > b.0.id }
        if let c, let key = Int(c.key) {
            rows = rows.filter { $0.1 < key || ($0.1 == key && $0.0.id < c.id) }
        }
        let items = rows.prefix(limit).map { (preset: $0.0, score: Double?.some(SearchScore.display($0.1))) }
        let next = rows.count > limit ? rows.prefix(limit).last.map { SearchCursor(kind: "f", key: "\($0.1)", id: $0.0.id).encoded } : nil
        return Page(items: items, nextCursor: next)
    }
}
