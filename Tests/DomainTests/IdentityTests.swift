import Domain
import XCTest

/// The one rule for user and org names (issue 15 item 12), shared by the CLI, key creation and
/// identity reads.
final class IdentityNameTests: XCTestCase {
    func testVisibleNamesAreAccepted() {
        for name in ["alice", "alice@example.com", "org/team-7", "Łukasz", "用户", "a|b", String(repeating: "x", count: 200)] {
            XCTAssertNil(Identity.nameProblem(name), name)
        }
    }

    func testControlSpaceAndOversizedNamesAreRefused() {
        for name in ["", "evil\nuser 7 bob", "tab\tbed", "sp ace", "nul\u{0}", "del\u{7F}", "c1\u{85}", "zero\u{200B}width",
                     "rtl\u{202E}txt", "line\u{2028}sep", "nbsp\u{00A0}x", String(repeating: "x", count: 201), String(repeating: "é", count: 101)] {
            XCTAssertNotNil(Identity.nameProblem(name), name.debugDescription)
        }
        XCTAssertEqual(Identity.nameProblem(String(repeating: "x", count: 10_000)), "at most 200 bytes (this one has 10000)")
    }
}
