import XCTest
@testable import Domain
import JSON

/// The search's rules: words, edit distances, query parsing, points and ranking.
final class PresetSearchTests: XCTestCase {
    func d(_ a: String, _ b: String, bound: Int = 2, prefix: Bool = false) -> Int? {
        EditDistance.distance(Array(a.unicodeScalars), Array(b.unicodeScalars), bound: bound, prefix: prefix)
    }

    func testOptimalStringAlignmentDistance() {
        XCTAssertEqual(d("base", "base"), 0)
        XCTAssertEqual(d("bse", "base"), 1, "a dropped letter")
        XCTAssertEqual(d("baase", "base"), 1, "a doubled letter")
        XCTAssertEqual(d("bsae", "base"), 1, "a swap of neighbours is one edit")
        XCTAssertEqual(d("tarnslate", "translate"), 1)
        XCTAssertEqual(d("ocde", "code"), 1)
        XCTAssertEqual(d("reivew", "review"), 1)
        XCTAssertEqual(d("vase", "base"), 1, "a wrong letter")
        XCTAssertEqual(d("tarnsalte", "translate"), 2, "two swaps")
        XCTAssertNil(d("ca", "abc", bound: 2), "OSA does not edit a substring twice (true Damerau would say 2)")
        XCTAssertEqual(d("ca", "abc", bound: 3), 3)
        XCTAssertNil(d("kitten", "sitting", bound: 2))
        XCTAssertEqual(d("kitten", "sitting", bound: 3), 3)
        XCTAssertNil(d("", "abc", bound: 2))
        XCTAssertEqual(d("", "ab", bound: 2), 2)
        XCTAssertEqual(d("日本語", "日本話"), 1, "characters, not bytes")
    }

    func testPrefixDistance() {
        XCTAssertEqual(d("trans", "translate", bound: 0, prefix: true), 0)
        XCTAssertEqual(d("tarns", "translate", bound: 1, prefix: true), 1)
        XCTAssertNil(d("xyz", "translate", bound: 1, prefix: true))
        XCTAssertEqual(d("translates", "translate", bound: 1, prefix: true), 1, "one more letter than the word")
    }

    func testAutoFuzziness() {
        XCTAssertEqual((0...8).map { EditDistance.allowed(length: $0) }, [0, 0, 0, 1, 1, 1, 2, 2, 2])
    }

    func testWordsAsTheDatabaseSplitsThem() {
        XCTAssertEqual(SearchWords.of("Summarize for a 2nd-grader: SUMMARIZE!"), ["summarize", "for", "a", "2nd", "grader"])
        XCTAssertEqual(SearchWords.of("snake_case o'brien 50%"), ["snake", "case", "o", "brien", "50"])
        XCTAssertEqual(SearchWords.of("Café 日本語のプロンプト 🦜"), ["café", "日本語のプロンプト"])
        XCTAssertEqual(SearchWords.of(String(repeating: "a", count: 41) + " ok"), ["ok"], "a run longer than 40 is no word")
        XCTAssertEqual(SearchWords.of(""), [])
    }

    func testQueryParsing() {
        let q = SearchQuery("  Tarnslate o'brien % 50% tarnslate  ")!
        XCTAssertEqual(q.words, ["tarnslate", "o", "brien", "50"])
        XCTAssertEqual(q.literals, ["%"])
        XCTAssertEqual(q.phrases, ["o'brien", "50%"])
        XCTAssertNil(SearchQuery("   "))
        let many = SearchQuery((1...20).map { "w\($0)" }.joined(separator: " "))!
        XCTAssertEqual(many.words.count, SearchQuery.maxUnits, "at most 8 words are looked for")
    }

    func testPointsPerKindOfMatch() {
        func p(_ q: String, _ w: String, last: Bool = false) -> Int {
            SearchQuery.points(query: Array(q.unicodeScalars), word: Array(w.unicodeScalars), last: last)
        }
        XCTAssertEqual(p("base", "base"), SearchQuery.Points.exact)
        XCTAssertEqual(p("bse", "base"), SearchQuery.Points.oneEdit)
        XCTAssertEqual(p("translat", "translate"), SearchQuery.Points.oneEdit)
        XCTAssertEqual(p("translat", "translate", last: true), SearchQuery.Points.prefix, "the last word, half-typed")
        XCTAssertEqual(p("tr", "translate"), 0, "a 2-letter word that is not last matches only itself")
        XCTAssertEqual(p("tr", "translate", last: true), SearchQuery.Points.prefix)
        XCTAssertEqual(p("tarnsl", "translate", last: true), SearchQuery.Points.oneEditPrefix)
        XCTAssertEqual(p("ummar", "summarize"), SearchQuery.Points.infix)
        XCTAssertEqual(p("summarise", "summarize"), SearchQuery.Points.oneEdit)
        XCTAssertEqual(p("sumarise", "summarize"), SearchQuery.Points.twoEdits)
        XCTAssertEqual(p("bs", "base"), 0, "under 3 letters: no edits")
        XCTAssertEqual(p("grader", "grocery", last: true), 0, "a half-typed word is forgiven one edit, not two")
        XCTAssertEqual(p("sqk", "sql"), SearchQuery.Points.oneEdit)
    }

    func testExpansionsAreBoundedAndDeterministic() {
        let dictionary = (0..<200).map { "word\($0)" }
        let e = SearchQuery("wor")!.expansions(dictionary: dictionary.shuffled())
        XCTAssertEqual(e.count, SearchQuery.maxExpansions)
        XCTAssertEqual(e, SearchQuery("wor")!.expansions(dictionary: dictionary.reversed()), "the same whatever the dictionary's order")
    }

    func preset(_ n: Int, _ name: String, tags: [String] = [], description: String = "") -> Preset {
        Preset(id: "00000000-0000-4000-8000-" + String(repeating: "0", count: 12 - String(n).count) + String(n), userID: "u", name: name,
               description: description, tags: tags, prompt: "p", parameters: JSONObject(),
               createdAt: "2026-12-01T10:00:00.000000Z", updatedAt: "2026-12-01T10:00:00.000000Z", version: 1)
    }

    func testRankingMoreWordsFirstThenHowWell() {
        let all = [preset(1, "Translate to French", tags: ["language"]),
                   preset(2, "French cooking", description: "recipes to translate"),
                   preset(3, "Summarize a base model answer"),
                   preset(4, "Code review checklist", tags: ["dev"]),
                   preset(5, "Translation notes", description: "french")]
        func names(_ q: String) -> [String] { PresetSearch.page(all, query: q, limit: 20, cursor: nil)!.items.map(\.preset.name) }
        XCTAssertEqual(names("tarnslate frnch").first, "Translate to French", "two typos, both words, in the name")
        XCTAssertEqual(names("tarnslate frnch"), ["Translate to French", "French cooking", "Translation notes"],
                       "both words (in the name before in the description), then one of them")
        XCTAssertEqual(names("bse"), ["Summarize a base model answer"], "a short word with one typo")
        XCTAssertEqual(names("ocde reivew"), ["Code review checklist"])
        XCTAssertEqual(names("translate xyzzy").first, "Translate to French", "one unknown word does not hide an exact hit on the other")
        XCTAssertEqual(names("french").last, "Translation notes", "a name word weighs more than a description word")
        XCTAssertEqual(names("cod").first, "Code review checklist", "the last word as a prefix (before near prefixes: mod…, coo…)")
    }
}
