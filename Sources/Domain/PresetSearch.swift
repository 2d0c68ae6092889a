/// Preset search over presets in memory (the shared cache, while the database is down), by the
/// same rules as the database's search (PresetRepository.searchStatement): what is searched is
/// `lower(name || ' ' || tags)`; every query word must occur in it as a substring or nearly (pg_trgm
/// word similarity ≥ 0.4, so "frnch" finds "french"); the score is the words' mean similarity plus
/// 1 per exact substring; best first, then by id. An empty query lists newest first. Pages and
/// cursors are the database's too, so a client can page on across an outage.
public enum PresetSearch {
    public static let wordSimilarityThreshold: Float = 0.4

    public struct Page: Sendable {
        public let items: [(preset: Preset, score: Double?)]
        public let nextCursor: String?
    }

    public static func searchText(_ p: Preset) -> String { (p.name + " " + p.tags.joined(separator: " ")).lowercased() }

    /// The page, or nil for a cursor this kind of query did not issue.
    public static func page(_ presets: [Preset], query: String, limit: Int, cursor: String?) -> Page? {
        let q = query.trimmingWhitespace().lowercased()
        let decoded = cursor.map(SearchCursor.decode)
        if let d = decoded, d == nil { return nil }
        let c = decoded ?? nil
        if q.isEmpty {
            if let c, c.kind != "t" { return nil }
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
        if let c, c.kind != "s" { return nil }
        var words: [String] = []
        for w in q.split(whereSeparator: { $0.isWhitespace }) where words.count < 8 && !words.contains(String(w)) { words.append(String(w)) }
        let queries = words.map { (word: $0, trigrams: Set(Trigrams.of($0))) }
        var rows: [(Preset, Float)] = []
        for p in presets {
            let text = searchText(p)
            let textTrigrams = Trigrams.of(text)
            var total: Float = 0
            var all = true
            for w in queries {
                let sim = Trigrams.wordSimilarity(w.trigrams, textTrigrams)
                let substring = text.range(ofLiteral: w.word) != nil
                guard substring || sim >= wordSimilarityThreshold else { all = false; break }
                total += sim + (substring ? 1 : 0)
            }
            if all { rows.append((p, total / Float(words.count))) }
        }
        rows.sort { a, b in a.1 != b.1 ? a.1 > b.1 : a.0.id > b.0.id }
        if let c, let key = Float(c.key) {
            rows = rows.filter { $0.1 < key || ($0.1 == key && $0.0.id < c.id) }
        }
        let items = rows.prefix(limit).map { (preset: $0.0, score: Double?.some(Double($0.1))) }
        let next = rows.count > limit ? rows.prefix(limit).last.map { SearchCursor(kind: "s", key: "\($0.1)", id: $0.0.id).encoded } : nil
        return Page(items: items, nextCursor: next)
    }
}

/// pg_trgm's trigrams: the text is split into words (runs of letters and digits), each padded with
/// two spaces before and one after; every three consecutive characters are a trigram.
public enum Trigrams {
    public static func of(_ text: String) -> [String] {
        var out: [String] = []
        var word: [Character] = []
        func flush() {
            guard !word.isEmpty else { return }
            let padded: [Character] = [" ", " "] + word + [" "]
            for i in 0...(padded.count - 3) { out.append(String(padded[i..<(i + 3)])) }
            word.removeAll(keepingCapacity: true)
        }
        for ch in text.lowercased() {
            if ch.isLetter || ch.isNumber { word.append(ch) } else { flush() }
        }
        flush()
        return out
    }

    /// The greatest similarity between the query's trigram set and any contiguous extent of the
    /// text's trigram sequence: shared / (query + extent − shared), as pg_trgm's word_similarity.
    /// Only extents that start and end on a shared trigram can be best, so only those are tried.
    public static func wordSimilarity(_ query: Set<String>, _ text: [String]) -> Float {
        guard !query.isEmpty else { return 0 }
        let hits = text.indices.filter { query.contains(text[$0]) }
        var best: Float = 0
        for start in hits {
            var seen = Set<String>()
            var shared = 0
            for end in start..<text.count {
                if seen.insert(text[end]).inserted, query.contains(text[end]) { shared += 1 }
                if query.contains(text[end]) {
                    let sim = Float(shared) / Float(query.count + seen.count - shared)
                    if sim > best { best = sim }
                }
                if shared == query.count { break }
            }
        }
        return best
    }
}
