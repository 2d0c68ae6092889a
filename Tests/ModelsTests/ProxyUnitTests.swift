import Foundation
import JSON
@testable import Models
import XCTest

final class CircuitBreakerTests: XCTestCase {
    let s: UInt64 = 1_000_000_000

    func testOpensAfterConsecutiveFailuresThenProbesAndCloses() {
        var b = CircuitBreaker(policy: BreakerPolicy())
        XCTAssertEqual(b.permit(now: 0), .normal)
        b.recordFailure(now: 1, permit: .normal)
        b.recordFailure(now: 2, permit: .normal)
        XCTAssertEqual(b.state, .closed)
        b.recordFailure(now: 3, permit: .normal)
        XCTAssertEqual(b.state, .open(until: 3 + s))
        XCTAssertNil(b.permit(now: s / 2), "open: nothing goes")
        XCTAssertFalse(b.wouldPermit(now: s / 2))
        XCTAssertEqual(b.permit(now: 3 + s), .probe, "half-open: one probe")
        XCTAssertNil(b.permit(now: 3 + s), "only one probe at a time")
        b.recordSuccess(now: 4 + s, permit: .probe)
        XCTAssertEqual(b.state, .halfOpen(probing: false, successes: 1))
        XCTAssertEqual(b.permit(now: 5 + s), .probe)
        b.recordSuccess(now: 6 + s, permit: .probe)
        XCTAssertEqual(b.state, .closed)
        XCTAssertEqual(b.timesOpened, 1)
    }

    func testAFailedProbeOpensAgainForLonger() {
        var b = CircuitBreaker(policy: BreakerPolicy())
        for t in 0..<3 { b.recordFailure(now: UInt64(t), permit: .normal) }
        XCTAssertEqual(b.permit(now: 2 + s), .probe)
        b.recordFailure(now: 2 + s, permit: .probe)
        XCTAssertEqual(b.state, .open(until: 2 + s + 2 * s), "open twice as long")
        XCTAssertEqual(b.permit(now: 2 + 3 * s), .probe)
        b.recordFailure(now: 2 + 3 * s, permit: .probe)
        XCTAssertEqual(b.state, .open(until: 2 + 3 * s + 4 * s))
    }

    func testFailureRatioOpensEvenWithoutARun() {
        var p = BreakerPolicy()
        p.consecutiveFailures = 100
        var b = CircuitBreaker(policy: p)
        for i in 0..<10 {
            if i % 2 == 0 { b.recordSuccess(now: UInt64(i), permit: .normal) } else { b.recordFailure(now: UInt64(i), permit: .normal) }
        }
        XCTAssertEqual(b.state.name, "open", "half of at least 10 requests failed")
        // Old outcomes leave the window.
        var c = CircuitBreaker(policy: p)
        for i in 0..<9 { c.recordFailure(now: UInt64(i), permit: .normal) }
        for i in 0..<20 { c.recordSuccess(now: 11 * s + UInt64(i), permit: .normal) }
        c.recordFailure(now: 12 * s, permit: .normal)
        XCTAssertEqual(c.state, .closed)
    }

    func testAnAbandonedProbeLetsAnotherTry() {
        var b = CircuitBreaker(policy: BreakerPolicy())
        for t in 0..<3 { b.recordFailure(now: UInt64(t), permit: .normal) }
        XCTAssertEqual(b.permit(now: 2 * s), .probe)
        b.releaseProbe(permit: .probe)
        XCTAssertEqual(b.permit(now: 2 * s), .probe)
    }

    func testHealthScoresAndPercentiles() {
        var h = UpstreamHealth()
        XCTAssertNil(h.ttftP95Nanos)
        XCTAssertLessThan(h.score(now: 0), 2_000_000, "no history: tried first")
        for i in 1...100 { h.firstToken(afterNanos: UInt64(i) * 1_000_000) }
        XCTAssertEqual(h.ttftP95Nanos, 96_000_000)
        let idle = h.score(now: 0)
        h.started(now: 0)
        XCTAssertEqual(h.score(now: 0), idle * 2, "load doubles the score")
        h.throttle(until: 10)
        XCTAssertEqual(h.score(now: 5), idle * 2000, "throttled: chosen only when nothing else can")
        XCTAssertEqual(h.score(now: 10), idle * 2, "… for as long as it asked")
    }
}

final class ModelsConfigTests: XCTestCase {
    func parse(_ json: String, env: [String: String] = [:]) throws -> ModelsConfig {
        try ModelsConfig.parse(try JSONParser.parse(json).objectValue!, environment: { env[$0] })
    }

    func testTheIssuesShapeLoads() throws {
        let c = try parse("""
            {"upstreams": [{"name": "east", "base_url": "http://127.0.0.1:9001/v1", "model": "builtin", "region": "east",
            "api_key_env": "EAST_KEY", "max_in_flight": 64}, {"name": "west", "base_url": "http://10.0.0.2/v1", "model": "m"},
            {"name": "small", "base_url": "http://localhost:9003", "model": "s"}],
            "aliases": {"chat": [["east", "west"], ["small"]]}}
            """, env: ["EAST_KEY": "sk-secret"])
        XCTAssertEqual(c.upstreams.map(\.name), ["east", "west", "small"])
        XCTAssertEqual(c.upstreams[0].apiKey, "sk-secret")
        XCTAssertEqual(c.upstreams[0].url.basePath, "/v1")
        XCTAssertEqual(c.upstreams[1].url.port, 80)
        XCTAssertEqual(c.upstreams[2].url.basePath, "")
        XCTAssertEqual(c.aliases.first?.groups, [["east", "west"], ["small"]])
        XCTAssertEqual(c.publicModels, ["chat"])
    }

    func testForwardingLimitsAndTheirMistakes() throws {
        let base = #""upstreams": [{"name": "u", "base_url": "http://127.0.0.1:9001/v1", "model": "m"}], "aliases": {"chat": [["u"]], "local": [["builtin"]]}"#
        let c = try parse(#"{\#(base), "forwarding": {"deny_fields": ["service_tier", "store"], "max_n": 2}}"#)
        XCTAssertEqual(c.deniedFields, ["service_tier", "store"])
        XCTAssertEqual(c.maxChoices, 2)
        XCTAssertEqual(c.upstreamModels, ["chat"], "an alias of builtin alone is not forwarded")
        XCTAssertEqual(try parse("{\(base)}").maxChoices, 8)
        for (bad, words) in [(#""forwarding": {"max_n": 9}"#, "forwarding.max_n"), (#""forwarding": {"deny_fields": ["messages"]}"#, "needed by every request"),
                             (#""forwarding": {"deny": []}"#, "unknown field \"deny\""), (#""forwarding": []"#, "forwarding: must be an object")] {
            XCTAssertThrowsError(try parse("{\(base), \(bad)}")) { e in XCTAssertTrue("\(e)".contains(words), "\(e)") }
        }
    }

    func testTheExampleInTheRepoLoads() throws {
        let path = URL(fileURLWithPath: #filePath).deletingLastPathComponent().deletingLastPathComponent().deletingLastPathComponent()
            .appendingPathComponent("docs/models.example.json").path
        let c = try ModelsConfig.load(path: path, environment: { _ in nil })
        XCTAssertEqual(c.publicModels.sorted(), ["chat", "local"])
    }

    func testMistakesAreNamed() {
        let base = #""aliases": {"m": [["a"]]}"#
        for (json, words) in [
            (#"{"upstreams": [{"name": "a", "base_url": "ftp://x", "model": "m"}], \#(base)}"#, "base_url"),
            (#"{"upstreams": [{"name": "a", "base_url": "http://x", "model": "m", "api_key_env": "NOPE"}], \#(base)}"#, "NOPE is not set"),
            (#"{"upstreams": [{"name": "a", "base_url": "http://x", "model": "m", "colour": 1}], \#(base)}"#, "unknown field \"colour\""),
            (#"{"upstreams": [{"name": "a", "base_url": "http://x", "model": "m"}, {"name": "a", "base_url": "http://y", "model": "m"}], \#(base)}"#, "used twice"),
            (#"{"upstreams": [{"name": "a", "base_url": "http://x", "model": "m"}], "aliases": {"m": [["b"]]}}"#, "no upstream named \"b\""),
            (#"{"upstreams": [{"name": "a", "base_url": "http://x", "model": "m", "max_in_flight": 0}], \#(base)}"#, "max_in_flight"),
            (#"{"upstreams": [{"name": "builtin", "base_url": "http://x", "model": "m"}], \#(base)}"#, "builtin"),
            (#"{"upstreams": [], "aliases": {}}"#, "at least one model"),
            (#"{"upstreams": [{"name": "a", "base_url": "http://x:99999", "model": "m"}], \#(base)}"#, "base_url"),
        ] {
            XCTAssertThrowsError(try parse(json), json) { e in
                XCTAssertTrue("\(e)".contains(words), "\(e) should mention \(words)")
            }
        }
    }

    func testAnAliasMayUseTheBuiltinModel() throws {
        let c = try parse(#"{"upstreams": [], "aliases": {"local": [["builtin"]]}}"#)
        XCTAssertEqual(c.aliases.first?.groups, [["builtin"]])
    }
}
