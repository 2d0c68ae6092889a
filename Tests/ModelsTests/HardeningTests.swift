import Foundation
@testable import HTTP1
import Domain
import FleetCore
import JSON
@testable import Models
import NetCore
import TLS
import XCTest

/// Operator mistakes and hostile upstream numbers (issue 15): each refused with a message naming
/// what is wrong, never a crash, never a header smuggled into a request.
final class HardeningTests: XCTestCase {
    func tempFile(_ bytes: [UInt8]) -> String {
        let path = NSTemporaryDirectory() + "pg-ca-\(UUID().uuidString).pem"
        FileManager.default.createFile(atPath: path, contents: Data(bytes))
        return path
    }

    /// Item 1: a CA file that cannot be loaded used to free the context twice (SIGABRT). Every
    /// shape of bad file throws, and the process goes on.
    func testBadCAFilesThrowAndNeverCrash() {
        var g = SystemRandomNumberGenerator()
        let bad = [
            tempFile([]),
            tempFile((0..<4096).map { _ in UInt8.random(in: 0...255, using: &g) }),
            tempFile(Array("-----BEGIN CERTIFICATE-----\nnot base64 at all\n-----END CERTIFICATE-----\n".utf8)),
            NSTemporaryDirectory(),
            "/nonexistent/ca.pem",
        ]
        for path in bad {
            for _ in 0..<3 {  // a double free shows on the first; repeat to be sure the heap is sound
                XCTAssertThrowsError(try TLSContext(caFile: path), path) { e in
                    XCTAssertTrue("\(e)".contains("cannot load the CA file"), "\(e)")
                }
            }
        }
        XCTAssertNoThrow(try TLSContext(caFile: nil), "the system store still loads")
    }

    func testTLSSessionRefusesABadHostWithoutCrashing() throws {
        let ctx = try TLSContext(caFile: nil)
        for host in ["", "bad host", String(repeating: "a", count: 300)] {
            _ = try? TLSSession(context: ctx, host: host)  // refused or accepted, never a double free
        }
        XCTAssertNoThrow(try TLSSession(context: ctx, host: "example.com"))
    }

    func parse(_ json: String, env: [String: String] = [:]) throws -> ModelsConfig {
        try ModelsConfig.parse(try JSONParser.parse(json).objectValue!, environment: { env[$0] })
    }

    /// Item 6: nothing that would split a request head gets in from the models file.
    func testControlCharactersInBaseURLOrKeyAreRefused() {
        let alias = #""aliases": {"m": [["a"]]}"#
        for (url, words) in [("http://h\r\nX-Evil: 1/v1", "control characters"), ("http://h/v1\r\nX-Evil: 1", "control characters"),
                             ("http://h/v 1", "spaces"), ("http://h\t/v1", "control"), ("http://[::1]:8000/v1", "IPv6"),
                             ("http://bad!host/v1", "not a host name"), ("http://bad%20host/v1", "not a host name"), ("http://h:0/v1", "port"), ("http://u:p@h/v1", "user information")] {
            let json = #"{"upstreams": [{"name": "a", "base_url": "\#(url.replacingOccurrences(of: "\r", with: "\\r").replacingOccurrences(of: "\n", with: "\\n").replacingOccurrences(of: "\t", with: "\\t"))", "model": "m"}], \#(alias)}"#
            XCTAssertThrowsError(try parse(json), url) { e in
                XCTAssertTrue("\(e)".contains("upstreams[0].base_url:"), "\(e)")
                XCTAssertTrue("\(e)".contains(words), "\(e) should say \(words)")
            }
        }
        // Container and service names carry underscores: those are host names like any other.
        let underscored = #"{"upstreams": [{"name": "a", "base_url": "http://model_a:8000/v1", "model": "m"}], \#(alias)}"#
        XCTAssertEqual(try? parse(underscored).upstreams[0].url.host, "model_a")
        for key in ["sk-1\r\nX-Evil: 1", "sk-1\n", "sk\u{0}1", "sk\u{7F}"] {
            let json = #"{"upstreams": [{"name": "a", "base_url": "http://h/v1", "model": "m", "api_key_env": "K"}], \#(alias)}"#
            XCTAssertThrowsError(try parse(json, env: ["K": key])) { e in
                XCTAssertTrue("\(e)".contains("upstreams[0].api_key_env: the value of K contains control characters"), "\(e)")
            }
        }
        XCTAssertNoThrow(try parse(#"{"upstreams": [{"name": "a", "base_url": "http://h/v1", "model": "m", "api_key_env": "K"}], \#(alias)}"#,
                                   env: ["K": "sk-fine key with spaces is allowed"]))
    }

    /// Item 6, second half: the client itself never writes an unsafe head, whoever calls it.
    func testTheHTTPClientRefusesUnsafeHeads() {
        var h = HTTPHeaders()
        h.add("Authorization", "Bearer sk\r\nX-Evil: 1")
        XCTAssertNotNil(HTTPClientPool.headProblem(method: "POST", path: "/v1", host: "h", headers: h))
        XCTAssertNotNil(HTTPClientPool.headProblem(method: "POST", path: "/v1 HTTP/1.0\r\nX: 1", host: "h", headers: HTTPHeaders()))
        XCTAssertNotNil(HTTPClientPool.headProblem(method: "POST", path: "/v1", host: "h\r\nX: 1", headers: HTTPHeaders()))
        XCTAssertNotNil(HTTPClientPool.headProblem(method: "PO ST", path: "/v1", host: "h", headers: HTTPHeaders()))
        var badName = HTTPHeaders()
        badName.add("X-Evil:\r\nA", "1")
        XCTAssertNotNil(HTTPClientPool.headProblem(method: "POST", path: "/v1", host: "h", headers: badName))
        var fine = HTTPHeaders()
        fine.add("Authorization", "Bearer sk-abc\tdef")
        fine.add("Content-Type", "application/json")
        XCTAssertNil(HTTPClientPool.headProblem(method: "POST", path: "/v1/chat/completions", host: "127.0.0.1:9000", headers: fine))
    }

    /// Item 7: the silent mistakes, each refused naming the place and the field.
    func testModelsFileMistakesAreNamed() throws {
        let up = #"{"name": "a", "base_url": "http://h/v1", "model": "m"}"#
        for (json, words) in [
            (#"{"upstreams": [\#(up)], "aliases": {"builtin": [["a"]]}}"#, "aliases.builtin: \"builtin\" is the model inside the node"),
            (#"{"upstreams": [\#(up)], "aliases": {"m": [["a"]], "m": [["builtin"]]}}"#, "the key \"m\" appears twice"),
            (#"{"upstreams": [{"name": "a", "name": "b", "base_url": "http://h/v1", "model": "m"}], "aliases": {"m": [["a"]]}}"#, "the key \"name\" appears twice"),
            (#"{"upstreams": [{"name": "a", "base_url": "http://h/v1", "model": "m", "ca_file": "/etc/hostname"}], "aliases": {"m": [["a"]]}}"#,
             "upstreams[0].ca_file: only for an https:// base_url"),
            (#"{"upstreams": [{"name": "a", "base_url": "https://h/v1", "model": "m", "ca_file": "/tmp"}], "aliases": {"m": [["a"]]}}"#,
             "upstreams[0].ca_file: /tmp is not a readable, non-empty file"),
            (#"{"upstreams": [{"name": "a", "base_url": "http://h/v1"}], "aliases": {"m": [["a"]]}}"#, "upstreams[0].model: required"),
            (#"{"upstreams": [{"name": "a", "base_url": "http://h/v1", "model": "m", "first_token_timeout_ms": 5000, "stream_timeout_ms": 1000}], "aliases": {"m": [["a"]]}}"#,
             "upstreams[0].stream_timeout_ms: must be at least first_token_timeout_ms"),
        ] {
            let path = tempFile(Array(json.utf8))
            XCTAssertThrowsError(try ModelsConfig.load(path: path, environment: { _ in nil }), json) { e in
                XCTAssertTrue("\(e)".contains(words), "\(e) should say \(words)")
            }
        }
        // Every message has "where: what".
        XCTAssertThrowsError(try parse(#"{"upstreams": 1, "aliases": {}}"#)) { e in XCTAssertTrue("\(e)".contains("upstreams: must be an array"), "\(e)") }
    }

    /// Item 7: a host that does not resolve, or a CA file that does not load, names the upstream
    /// and the field (it was "getaddrinfo … errno 22").
    func testSetupFailuresNameTheUpstreamAndField() throws {
        let c = try parse(#"{"upstreams": [{"name": "east", "base_url": "http://nowhere.invalid/v1", "model": "m"}], "aliases": {"m": [["east"]]}}"#)
        XCTAssertThrowsError(try ProxyBackend(config: c, builtin: NoBackend(), resolve: { h, p in try SocketAddress.resolve(host: h, port: p) })) { e in
            XCTAssertTrue("\(e)".contains("upstreams[0] (east).base_url: cannot resolve the host \"nowhere.invalid\""), "\(e)")
        }
        let ca = tempFile(Array("not a certificate".utf8))
        let t = try parse(#"{"upstreams": [{"name": "west", "base_url": "https://127.0.0.1:9/v1", "model": "m", "ca_file": "\#(ca)"}], "aliases": {"m": [["west"]]}}"#)
        XCTAssertThrowsError(try ProxyBackend(config: t, builtin: NoBackend(), resolve: { h, p in try SocketAddress.resolve(host: h, port: p) })) { e in
            XCTAssertTrue("\(e)".contains("upstreams[0] (west).ca_file: cannot load the CA file"), "\(e)")
        }
    }

    /// Item 8: usage numbers from an upstream are believed only when they can be true.
    func testUpstreamUsageIsValidated() throws {
        func usage(_ json: String) -> Usage? { UpstreamAttempt.trustedUsage(try! JSONParser.parse(json).objectValue!) }
        XCTAssertEqual(usage(#"{"prompt_tokens": 3, "completion_tokens": 7}"#), Usage(promptTokens: 3, completionTokens: 7))
        XCTAssertNil(usage(#"{"prompt_tokens": -1, "completion_tokens": 7}"#))
        XCTAssertNil(usage(#"{"prompt_tokens": 1, "completion_tokens": -199999999980}"#))
        XCTAssertNil(usage(#"{"prompt_tokens": 1, "completion_tokens": 1e15}"#))
        XCTAssertNil(usage(#"{"prompt_tokens": 1.5, "completion_tokens": 2}"#))
        XCTAssertNil(usage(#"{"prompt_tokens": "3", "completion_tokens": 2}"#))
        XCTAssertNil(usage(#"{"completion_tokens": 2}"#))
    }
}

/// A backend that is never asked for anything (the proxy's fallback in setup tests).
final class NoBackend: ModelBackend, @unchecked Sendable {
    func start(_ request: CompletionRequest, seed: UInt64, on loop: EventLoop, sink: GenerationSink) -> RunningGeneration {
        fatalError("not used")
    }
}
