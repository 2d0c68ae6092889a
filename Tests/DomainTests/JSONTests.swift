import JSON
import XCTest

final class JSONTests: XCTestCase {
    func testParsesAndRoundTrips() throws {
        let text = #"{"a":[1,2.5,-3e2,true,false,null],"b":{"c":"d\n\"é😀"},"e":""}"#
        let v = try JSONParser.parse(text)
        XCTAssertEqual(v["a"]?.arrayValue?.count, 6)
        XCTAssertEqual(v["a"]?.arrayValue?[2].doubleValue, -300)
        XCTAssertEqual(v["b"]?["c"]?.stringValue, "d\n\"é😀")
        var w = JSONWriter()
        w.value(v)
        XCTAssertEqual(try JSONParser.parse(w.bytes), v)
    }

    /// A later duplicate key replaces the earlier value, in the earlier key's place, whether the
    /// object is small (scanned) or large (indexed).
    func testDuplicateKeysSmallAndLarge() throws {
        let small = try JSONParser.parse(#"{"a":1,"b":2,"a":3}"#).objectValue!
        XCTAssertEqual(small.keys, ["a", "b"])
        XCTAssertEqual(small["a"]?.intValue, 3)
        let many = (0..<5_000).map { "\"k\($0)\":\($0)" }.joined(separator: ",")
        let large = try JSONParser.parse("{" + many + #","k7":-1,"k4999":-2,"new":1}"#).objectValue!
        XCTAssertEqual(large.count, 5_001)
        XCTAssertEqual(large["k7"]?.intValue, -1)
        XCTAssertEqual(large["k4999"]?.intValue, -2)
        XCTAssertEqual(large.keys[7], "k7")
        XCTAssertEqual(large.keys.last, "new")
        let edge = try JSONParser.parse(#"{"a":1,"b":1,"c":1,"d":1,"e":1,"f":1,"g":1,"h":1,"a":2,"i":1,"i":3}"#).objectValue!
        XCTAssertEqual(edge.keys, ["a", "b", "c", "d", "e", "f", "g", "h", "i"])
        XCTAssertEqual(edge["a"]?.intValue, 2)
        XCTAssertEqual(edge["i"]?.intValue, 3)
    }

    func testEscapesAndSurrogates() throws {
        XCTAssertEqual(try JSONParser.parse(#""\ud83d\ude00""#).stringValue, "😀")
        XCTAssertEqual(try JSONParser.parse(#""\ud83d""#).stringValue, "\u{FFFD}", "lone surrogate is replaced")
        XCTAssertEqual(try JSONParser.parse(#""\u00e9\t\/""#).stringValue, "é\t/")
        var out: [UInt8] = []
        JSONWriter.appendEscaped("a\u{01}\"\\\n", to: &out)
        XCTAssertEqual(String(decoding: out, as: UTF8.self), #""a\u0001\"\\\n""#)
    }

    func testRejectsWhatIsNotJSON() {
        let bad = ["", "{", "[1,]", "{\"a\":1,}", "01", "1.", ".5", "+1", "NaN", "Infinity", "'a'", "{\"a\" 1}", "[1 2]",
                   "\"\u{01}\"", "\"\\x\"", "\"\\u12\"", "tru", "nul", "1 2", "{}x", "1e999",
                   String(repeating: "[", count: 100) + String(repeating: "]", count: 100)]
        for b in bad {
            XCTAssertThrowsError(try JSONParser.parse(b), "accepted \(b.prefix(20))")
        }
        XCTAssertThrowsError(try JSONParser.parse([0x22, 0xFF, 0x22]), "invalid UTF-8")
    }

    func testDuplicateKeyKeepsLast() throws {
        XCTAssertEqual(try JSONParser.parse(#"{"a":1,"a":2}"#)["a"]?.intValue, 2)
    }

    func testIntValue() throws {
        XCTAssertEqual(try JSONParser.parse("12").intValue, 12)
        XCTAssertNil(try JSONParser.parse("1.5").intValue)
        XCTAssertEqual(try JSONParser.parse("1e3").intValue, 1000)
        XCTAssertNil(try JSONParser.parse("1e300").intValue)
    }

    func testWriterNumbers() {
        var w = JSONWriter()
        w.beginArray(); w.int(-42); w.int(0); w.double(1.5); w.double(3); w.double(.infinity); w.endArray()
        XCTAssertEqual(w.string, "[-42,0,1.5,3,null]")
    }
}
