import Domain
import XCTest

/// Named variables in a preset's prompt.
final class PromptTemplateTests: XCTestCase {
    func testVariablesInOrderOnceAndWhatIsNotOne() {
        let t = PromptTemplate("Write for {{audience}} about {{topic}}; {{audience}} again. {{ spaced }} {{a-b}} {{}} {{input}} \\{{topic}}")
        XCTAssertEqual(t.variables, ["audience", "topic", "input"])
        XCTAssertEqual(PromptTemplate(String(repeating: "x", count: 65).wrapped).variables, [], "names are at most 64")
        XCTAssertEqual(PromptTemplate(String(repeating: "x", count: 64).wrapped).variables, [String(repeating: "x", count: 64)])
        XCTAssertEqual(PromptTemplate("{{é}} {{x}").variables, [])
    }

    func testRenderingValuesInputAndLiteralBraces() throws {
        let t = PromptTemplate("Dear {{who}}, {{input}}! \\{{who}} and {{ who }} stay. é{{who}}")
        XCTAssertEqual(try t.render(values: ["who": "Ada"], input: "hi"), "Dear Ada, hi! {{who}} and {{ who }} stay. éAda")
        XCTAssertEqual(try PromptTemplate("Sum up:").render(values: [:], input: "text"), "Sum up:\n\ntext", "no {{input}}: after a blank line")
        XCTAssertEqual(try PromptTemplate("{{input}}").render(values: [:], input: nil), "")
        XCTAssertEqual(try PromptTemplate("a \\ b \\{ c").render(values: [:], input: nil), "a \\ b \\{ c", "a lone backslash is text")
    }

    func testMissingExtraAndTooBigNameTheField() {
        let t = PromptTemplate("For {{audience}}: {{input}}")
        XCTAssertThrowsError(try t.render(values: [:], input: "x")) { XCTAssertEqual(($0 as? APIError)?.field, "variables.audience") }
        XCTAssertThrowsError(try t.render(values: ["audience": "a", "audiance": "b"], input: "x")) {
            XCTAssertEqual(($0 as? APIError)?.field, "variables.audiance")
        }
        XCTAssertThrowsError(try t.render(values: ["audience": "a", "input": "b"], input: "x")) {
            XCTAssertEqual(($0 as? APIError)?.field, "variables.input")
        }
        // Thousands of placeholders and a big value: refused from the sizes alone.
        let many = PromptTemplate(String(repeating: "{{v}}", count: 6000))
        XCTAssertThrowsError(try many.render(values: ["v": String(repeating: "x", count: 1000)], input: nil, maxBytes: 256 * 1024)) {
            XCTAssertEqual(($0 as? APIError)?.field, "variables")
        }
        XCTAssertThrowsError(try PromptTemplate(String(repeating: "{{input}}", count: 6000)).render(values: [:], input: String(repeating: "y", count: 1000),
                                                                                                       maxBytes: 256 * 1024)) {
            XCTAssertEqual(($0 as? APIError)?.field, "input_context")
        }
    }
}

private extension String {
    var wrapped: String { "{{" + self + "}}" }
}
