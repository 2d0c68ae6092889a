import Domain
import Foundation
import JSON
import Storage
import XCTest

/// Queued writes against the PostgreSQL the test script starts, and the cache's search beside the
/// database's: the same rules must give the same presets.
final class LiveOutboxTests: XCTestCase {
    struct NoDatabase: Error {}

    func connect() throws -> PGConnection {
        guard let url = ProcessInfo.processInfo.environment["DATABASE_URL"], !url.isEmpty else {
            XCTFail("DATABASE_URL is not set: run through scripts/test.sh, which starts PostgreSQL")
            throw NoDatabase()
        }
        let c = try PGConnection(url: url)
        _ = try Migrations.apply(c, directory: URL(fileURLWithPath: #filePath).deletingLastPathComponent().deletingLastPathComponent()
            .deletingLastPathComponent().appendingPathComponent("sql").path)
        try c.query("SET pg_trgm.word_similarity_threshold = 0.4")
        return c
    }

    func user() -> Identity { Identity(userID: "outbox-" + UUID().uuidString.prefix(8), orgID: nil, keyID: 0) }

    func fields(_ name: String?, prompt: String? = nil, tags: [String]? = nil) -> PresetFields {
        var f = PresetFields()
        f.name = name
        f.prompt = prompt
        f.tags = tags
        return f
    }

    func write(_ op: PresetWrite.Op, _ u: Identity, id: String, _ f: PresetFields) -> PresetWrite {
        PresetWrite(key: Credentials.newUUID(), op: op, presetID: id, userID: u.userID, orgID: nil, fields: f,
                    queuedAt: "2026-12-01T10:00:00.123456Z")
    }

    func testEachWriteAppliesExactlyOnce() throws {
        let conn = try connect()
        let u = user()
        let id = Credentials.newUUID()
        let create = write(.create, u, id: id, fields("Once", prompt: "p", tags: ["t"]))
        guard case .applied(let p?) = try PresetRepository.applyQueued(conn, create) else { return XCTFail() }
        XCTAssertEqual(p.id, id)
        XCTAssertEqual(p.createdAt, "2026-12-01T10:00:00.123456Z", "created when it was accepted, not when applied")
        guard case .duplicate = try PresetRepository.applyQueued(conn, create) else { return XCTFail("delivered again: nothing done") }
        let update = write(.update, u, id: id, fields(nil, prompt: "q"))
        guard case .applied(let p2?) = try PresetRepository.applyQueued(conn, update) else { return XCTFail() }
        guard case .duplicate = try PresetRepository.applyQueued(conn, update) else { return XCTFail() }
        XCTAssertEqual(p2.version, 2, "applied once, not twice")
        XCTAssertEqual(p2.tags, ["t"])
        XCTAssertEqual(try PresetRepository.get(conn, user: u, id: id)?.version, 2)
        XCTAssertTrue(try PresetRepository.failedWrites(conn, user: u).isEmpty)
    }

    func testWritesThatCannotApplyAreKeptForTheirOwner() throws {
        let conn = try connect()
        let u = user()
        guard case .success(let taken) = try PresetRepository.create(conn, user: u, fields: fields("Taken", prompt: "p")) else { return XCTFail() }
        let clash = write(.create, u, id: Credentials.newUUID(), fields("TAKEN", prompt: "x"))
        guard case .failed(let code, _) = try PresetRepository.applyQueued(conn, clash) else { return XCTFail() }
        XCTAssertEqual(code, "conflict")
        let gone = Credentials.newUUID()
        guard case .failed(let code2, _) = try PresetRepository.applyQueued(conn, write(.update, u, id: gone, fields(nil, prompt: "z"))) else {
            return XCTFail()
        }
        XCTAssertEqual(code2, "not_found")
        guard case .applied(nil) = try PresetRepository.applyQueued(conn, write(.delete, u, id: gone, PresetFields())) else {
            return XCTFail("deleting what is gone already holds")
        }
        let failed = try PresetRepository.failedWrites(conn, user: u)
        XCTAssertEqual(failed.map(\.code), ["conflict", "not_found"])
        XCTAssertEqual(failed[0].write.fields.name, "TAKEN")
        XCTAssertTrue(try PresetRepository.dismissFailedWrite(conn, user: u, key: failed[0].write.key))
        XCTAssertFalse(try PresetRepository.dismissFailedWrite(conn, user: user(), key: failed[1].write.key), "only its owner")
        XCTAssertEqual(try PresetRepository.failedWrites(conn, user: u).count, 1)
        // The failed write left nothing behind; the transaction still committed its key.
        XCTAssertEqual(try PresetRepository.get(conn, user: u, id: taken.id)?.prompt, "p")
        XCTAssertEqual(try conn.query("SELECT count(*) FROM presets WHERE user_id = $1", [u.userID]).rows[0][0], "1")
    }

    func testACreateWhoseAnswerWasLostIsNotMadeTwice() throws {
        let conn = try connect()
        let u = user()
        let id = Credentials.newUUID()
        // The direct insert happened, but its answer never came back; the same create was queued.
        _ = try PresetRepository.create(conn, user: u, fields: fields("Lost answer", prompt: "p"), id: id)
        guard case .applied(let p?) = try PresetRepository.applyQueued(conn, write(.create, u, id: id, fields("Lost answer", prompt: "p"))) else {
            return XCTFail()
        }
        XCTAssertEqual(p.id, id)
        XCTAssertEqual(try conn.query("SELECT count(*) FROM presets WHERE user_id = $1", [u.userID]).rows[0][0], "1")
    }

    /// The database's preset_search_words() and SearchWords.of split text alike, beyond ASCII too.
    func testWordsAreSplitAsTheDatabaseSplitsThem() throws {
        let conn = try connect()
        let texts = ["İstanbul x² ½ ① café Ⅻ ΣΑΣ ﬁne ß 日本語 ١٢٣", "e\u{301}cole x\u{301}y ãb Ǆemal", "हिन्दी नमस्ते", "snake_case o'brien 50% 2nd-grader",
                     "ÀÉÎÕÜ Ångström ǅ ǈ", "emoji 🦜 party 👍🏽", String(repeating: "a", count: 40) + " " + String(repeating: "b", count: 41),
                     "tab\tnew\nline", "ΟΔΥΣΣΕΥΣ Straße ŉ", ""]
        for t in texts {
            let db = try conn.query("SELECT array_to_json(preset_search_words($1))::text", [t]).rows[0][0] ?? "[]"
            let words = (try JSONParser.parse(db)).arrayValue?.compactMap(\.stringValue) ?? []
            XCTAssertEqual(Set(words), Set(SearchWords.of(t)), "'\(t)'")
            let lowered = try conn.query("SELECT lower($1)", [t]).rows[0][0] ?? ""
            XCTAssertEqual(lowered, SearchWords.lowered(t), "lower('\(t)')")
        }
    }

    /// The start-up check finds the test database (C.UTF-8) in agreement, and a database made
    /// with the C locale in disagreement.
    func testTheStartUpCheckFindsWhetherTheWordsAgree() throws {
        let conn = try connect()
        XCTAssertNil(try PresetRepository.wordsDisagreement(conn))
        let name = "words_c_\(UInt32.random(in: 0...UInt32.max))"
        try conn.query("CREATE DATABASE \(name) TEMPLATE template0 ENCODING 'UTF8' LC_CTYPE 'C' LC_COLLATE 'C'")
        defer { _ = try? conn.query("DROP DATABASE IF EXISTS \(name)") }
        let url = ProcessInfo.processInfo.environment["DATABASE_URL"]!
        let sql = try String(contentsOfFile: URL(fileURLWithPath: #filePath).deletingLastPathComponent().deletingLastPathComponent()
            .deletingLastPathComponent().appendingPathComponent("sql/004_typo_search.sql").path, encoding: .utf8)
        let function = sql[sql.range(of: "CREATE FUNCTION preset_search_words")!.lowerBound...]
        // (Its own scope: the connection is gone before the database is dropped.)
        func ask() throws -> String? {
            let other = try PGConnection(url: String(url[..<url.lastIndex(of: "/")!]) + "/" + name)
            try other.execute(String(function[..<function.range(of: "$$;")!.upperBound]))
            return try PresetRepository.wordsDisagreement(other)
        }
        let said = try ask()
        XCTAssertNotNil(said, "the C locale splits İstanbul and ² differently")
        XCTAssertTrue(said?.contains("lc_ctype C") == true, said ?? "")
    }

    /// The cache's search (PresetSearch) and the database's give the same presets for the same query.
    func testCacheSearchAgreesWithTheDatabase() throws {
        let conn = try connect()
        let u = user()
        let names: [(String, [String])] = [("French translator", ["lang", "fr"]), ("Summarize meeting notes", ["work"]),
                                           ("Code review helper", ["dev"]), ("Haiku writer", ["poetry", "fun"]),
                                           ("Translate to German", ["lang"]), ("SQL explainer", ["dev", "db"]),
                                           ("Email polisher", ["work", "writing"]), ("50% off: o'brien_test", []),
                                           ("İstanbul café guide x²", ["travel"]), ("Thumbs 👍🏽", [])]
        var all: [Preset] = []
        for (i, (n, tags)) in names.enumerated() {
            var f = fields(n, prompt: "p", tags: tags)
            f.description = ["", "Notes for the weekly team meeting", "Reviews a diff; français et español", "5-7-5 poems"][i % 4]
            guard case .success(let p) = try PresetRepository.create(conn, user: u, fields: f) else { return XCTFail() }
            all.append(p)
        }
        for q in ["frnch", "translat", "lang", "dev", "writ", "summarise", "haiku fun", "sql", "german lang", "o'brien", "50%", "_",
                  "zzz", "code revew", "e", "", "tarnslate", "ocde reivew", "sqk", "emial polisher", "hiaku", "germna", "transl frnch",
                  "% _", "brien 50", "summarize xyzzy notes", "istanbul", "İSTANBUL", "x²", "👍", "café", "cafe"] {
            guard case .success(let db) = try PresetRepository.search(conn, user: u, query: q, limit: 100, cursor: nil),
                  let mem = PresetSearch.page(all, query: q, limit: 100, cursor: nil) else { return XCTFail(q) }
            XCTAssertEqual(mem.items.map(\.preset.id), db.items.map(\.preset.id), "query '\(q)': the same presets in the same order")
            XCTAssertEqual(mem.items.map(\.score), db.items.map(\.score), "query '\(q)': the same scores")
        }
    }
}
