import Domain
import JSON
import XCTest

final class PresetCachingTests: XCTestCase {
    func preset(_ id: String, _ name: String, tags: [String] = [], created: String = "2026-12-01T10:00:00.000000Z") -> Preset {
        Preset(id: id, userID: "u", name: name, description: "", tags: tags, prompt: "p", parameters: JSONObject(),
               createdAt: created, updatedAt: created, version: 1)
    }

    func id(_ n: Int) -> String { "00000000-0000-4000-8000-" + String(repeating: "0", count: 12 - String(n).count) + String(n) }

    func testTimestampsRoundTrip() {
        for s in ["2026-12-02T06:45:11.129112Z", "1970-01-01T00:00:00.000000Z", "2000-02-29T23:59:59.999999Z", "2100-03-01T00:00:00.000001Z"] {
            guard let us = Timestamps.micros(s) else { return XCTFail(s) }
            XCTAssertEqual(Timestamps.format(micros: us), s)
        }
        XCTAssertEqual(Timestamps.micros("1970-01-01T00:00:01Z"), 1_000_000)
        XCTAssertEqual(Timestamps.micros("1970-01-01T00:00:00.5Z"), 500_000)
        for bad in ["", "yesterday", "2026-13-01T00:00:00Z", "2026-12-01 00:00:00Z", "2026-12-01T00:00:00.1234567Z", "2026-12-01T00:00:0xZ"] {
            XCTAssertNil(Timestamps.micros(bad), bad)
        }
    }

    func testWritesAndCachedPresetsRoundTrip() {
        var f = PresetFields()
        f.name = "N \"quoted\""
        f.tags = ["a", "b"]
        f.parameters = JSONObject([("temperature", .number(0.5))])
        let w = PresetWrite(key: id(1), op: .update, presetID: id(2), userID: "u|x", orgID: nil, fields: f, queuedAt: "2026-12-01T10:00:00.000000Z")
        XCTAssertEqual(PresetWrite.decode(w.encoded), w)
        XCTAssertNil(PresetWrite.decode("{\"op\":\"explode\"}"))
        XCTAssertNil(PresetWrite.decode("not json"))
        let c = CachedPreset(preset: preset(id(3), "Name", tags: ["t"]), pending: true)
        let back = CachedPreset.decode(c.encoded, pending: true)
        XCTAssertEqual(back?.preset.name, "Name")
        XCTAssertEqual(back?.preset.userID, "u")
        XCTAssertEqual(back?.preset.tags, ["t"])
        XCTAssertEqual(back?.createdScore, Timestamps.micros("2026-12-01T10:00:00.000000Z"))
    }

    func testAppliedFieldsReplaceOnlyWhatIsGiven() {
        var f = PresetFields()
        f.prompt = "new"
        let p = preset(id(1), "Keep", tags: ["x"]).applying(f)
        XCTAssertEqual(p.prompt, "new")
        XCTAssertEqual(p.name, "Keep")
        XCTAssertEqual(p.tags, ["x"])
    }

    func testSearchMatchesSubstringsAndMisspellings() {
        let all = [preset(id(1), "French translator", tags: ["lang"]), preset(id(2), "Summarizer"), preset(id(3), "Code review", tags: ["dev", "french"])]
        func ids(_ q: String) -> [String] { PresetSearch.page(all, query: q, limit: 20, cursor: nil)!.items.map(\.preset.id) }
        XCTAssertEqual(ids("frnch").sorted(), [id(1), id(3)], "a misspelling finds the name and the tag")
        XCTAssertEqual(ids("SUMM"), [id(2)], "a half-typed word, case-insensitive")
        XCTAssertEqual(ids("french lang"), [id(1), id(3)], "both words first, then one of them")
        XCTAssertEqual(ids("zzzz"), [])
        XCTAssertEqual(ids(""), [id(3), id(2), id(1)], "an empty query lists all (same time: by id, descending)")
        let exact = PresetSearch.page(all, query: "french", limit: 20, cursor: nil)!.items
        XCTAssertEqual(exact.count, 2)
        XCTAssertEqual(exact[0].score!, 1.016, accuracy: 1e-9, "one word matched, exactly, in the name (8 points, doubled)")
    }

    func testPagesFollowCursorsWithoutGapsOrRepeats() {
        let all = (0..<25).map { i in preset(id(i), "item \(i)", created: Timestamps.format(micros: 1_800_000_000_000_000 + Int64(i) * 1000)) }
        for q in ["", "item", "item 1"] {
            var seen: [String] = []
            var cursor: String?
            repeat {
                guard let page = PresetSearch.page(all, query: q, limit: 7, cursor: cursor) else { return XCTFail("cursor refused") }
                seen += page.items.map(\.preset.id)
                cursor = page.nextCursor
            } while cursor != nil
            XCTAssertEqual(seen.count, 25, q)
            XCTAssertEqual(Set(seen).count, 25, q)
        }
        XCTAssertEqual(PresetSearch.page(all, query: "", limit: 7, cursor: nil)!.items.first?.preset.id, id(24), "newest first")
        XCTAssertNil(PresetSearch.page(all, query: "x", limit: 7, cursor: "garbage"))
        let listCursor = PresetSearch.page(all, query: "", limit: 7, cursor: nil)!.nextCursor
        XCTAssertNil(PresetSearch.page(all, query: "item", limit: 7, cursor: listCursor), "a listing's cursor is not a search's")
    }

    func testUUIDs() {
        let u = UUIDText.make(Array(repeating: 0xFF, count: 16))
        XCTAssertTrue(UUIDText.isValid(u))
        XCTAssertEqual(Array(u)[14], "4", "version 4")
        XCTAssertFalse(UUIDText.isValid("zz"))
    }
}
