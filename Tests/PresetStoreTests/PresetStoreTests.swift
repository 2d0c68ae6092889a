import Domain
import PresetStore
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
        guard let (sql, params) = PresetRepository.searchStatement(user: user, query: "50% o'brien", limit: 20, cursor: nil) else {
            return XCTFail()
        }
        XCTAssertFalse(sql.contains("o'brien"), "values never appear in the SQL text")
        XCTAssertFalse(sql.contains("50%"))
        XCTAssertTrue(params.contains("%50\\%%"), "LIKE wildcards in the query are escaped")
        XCTAssertTrue(params.contains("o'brien"))
        XCTAssertNil(PresetRepository.searchStatement(user: user, query: "x", limit: 20, cursor: "not-a-cursor"))
        XCTAssertNil(PresetRepository.searchStatement(user: user, query: "", limit: 20, cursor: "dHwxfDI"), "garbage cursor")
    }
}
