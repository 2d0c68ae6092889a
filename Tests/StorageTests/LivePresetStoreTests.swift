import Domain
import Storage
import Foundation
import XCTest

final class CredentialTests: XCTestCase {
    func testKeysAreRandomAndHashed() {
        let a = Credentials.newKey(), b = Credentials.newKey()
        XCTAssertNotEqual(a, b)
        XCTAssertTrue(a.hasPrefix("pgk_"))
        XCTAssertEqual(a.count, 4 + 43)
        XCTAssertTrue(Credentials.looksValid(a))
        XCTAssertEqual(Credentials.hex(Credentials.sha256("abc")), "ba7816bf8f01cfea414140de5dae2223b00361a396177a9cb410ff61f20015ad")
        XCTAssertFalse(Credentials.looksValid("short"))
        XCTAssertFalse(Credentials.looksValid("pgk_has space in it and is long"))
        XCTAssertFalse(Credentials.looksValid(String(repeating: "a", count: 300)))
    }

    func testUUIDShape() {
        XCTAssertTrue(PresetRepository.isUUID("750458cb-48cf-4d0f-a94f-80d32f374b31"))
        XCTAssertFalse(PresetRepository.isUUID("750458cb48cf4d0fa94f80d32f374b31"))
        XCTAssertFalse(PresetRepository.isUUID("750458cb-48cf-4d0f-a94f-80d32f374b3g"))
        XCTAssertFalse(PresetRepository.isUUID("'; DROP TABLE presets; --"))
    }

    func testSearchStatementBindsEveryWord() {
        let user = Identity(userID: "u", orgID: nil, keyID: 1)
        let q = SearchQuery("50% o'brien \"quoted\\\" %")
        let expansions = q!.expansions(dictionary: ["brien", "50", "o", "quoted", "unrelated"])
        let (sql, params) = PresetRepository.searchStatement(user: user, query: q, expansions: expansions, limit: 20, after: nil)
        XCTAssertFalse(sql.contains("o'brien"), "values never appear in the SQL text")
        XCTAssertFalse(sql.contains("50%"))
        XCTAssertTrue(params.contains("{\"50\",\"o\",\"brien\",\"quoted\"}"), "\(params)")
        XCTAssertTrue(params.contains("{\"%\"}"), "a token without letters is looked for literally")
        XCTAssertTrue(params.contains("{\"50%\",\"o'brien\",\"\\\"quoted\\\\\\\"\"}"), "phrases, quotes and backslashes escaped: \(params)")
        let listing = SearchCursor(kind: "t", key: "2026-12-01T10:00:00.000000Z", id: "750458cb-48cf-4d0f-a94f-80d32f374b31").encoded
        let search = SearchCursor(kind: "f", key: "2016", id: "750458cb-48cf-4d0f-a94f-80d32f374b31").encoded
        XCTAssertThrowsError(try SearchCursor.continuing("not-a-cursor", kind: "f"))
        XCTAssertThrowsError(try SearchCursor.continuing("dHwxfDI", kind: "t"), "garbage cursor")
        XCTAssertThrowsError(try SearchCursor.continuing(listing, kind: "f"), "a listing's cursor is not a search's")
        XCTAssertThrowsError(try SearchCursor.continuing(search, kind: "t"))
        XCTAssertEqual(try SearchCursor.continuing(search, kind: "f")?.key, "2016")
        XCTAssertNil(try SearchCursor.continuing(nil, kind: "f"))
    }
}

/// Against the PostgreSQL the test script starts (DATABASE_URL): fails, never skips, without it.
final class LivePGTests: XCTestCase {
    struct NoDatabase: Error {}

    func connect() throws -> PGConnection {
        guard let url = ProcessInfo.processInfo.environment["DATABASE_URL"], !url.isEmpty else {
            XCTFail("DATABASE_URL is not set: run through scripts/test.sh, which starts PostgreSQL")
            throw NoDatabase()
        }
        return try PGConnection(url: url)
    }

    /// Parameters travel as C strings: a NUL is refused before sending, never silently cut short.
    func testNULParameterIsRefusedNotTruncated() throws {
        let conn = try connect()
        XCTAssertEqual(try conn.query("SELECT $1::text", ["before"]).rows.first?.first, "before")
        XCTAssertThrowsError(try conn.query("SELECT $1::text", ["before\u{0}after"])) { e in
            let e = e as! PGError
            XCTAssertEqual(e.kind, .invalidInput)
            XCTAssertTrue(e.isDataError)
            XCTAssertFalse(e.isUnavailable, "not a reason to say the store is degraded")
        }
        // jsonb refuses an escaped NUL with SQLSTATE 22P05: a data error, not an outage.
        XCTAssertThrowsError(try conn.query("SELECT $1::jsonb", [#"{"stop":["a\u0000b"]}"#])) { e in
            let e = e as! PGError
            XCTAssertEqual(e.sqlState, "22P05")
            XCTAssertTrue(e.isDataError)
        }
        XCTAssertTrue(conn.isHealthy, "the connection survives both")
    }
}
