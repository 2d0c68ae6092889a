import Foundation

/// One case of Tests/corpus/http1-requests.txt.
public struct CorpusCase: CustomStringConvertible {
    public var name: String
    public var raw: [UInt8]
    public var status: Int
    public var responses: Int
    public var closes: Bool
    public var body: String?
    public var description: String { name }
}

public enum Corpus {
    public static var directory: URL {
        URL(fileURLWithPath: #filePath).deletingLastPathComponent().deletingLastPathComponent().appendingPathComponent("corpus")
    }

    public static func httpRequests() throws -> [CorpusCase] {
        let text = try String(contentsOf: directory.appendingPathComponent("http1-requests.txt"), encoding: .utf8)
        var cases: [CorpusCase] = []
        var current: CorpusCase?
        func flush() { if let c = current { cases.append(c) } }
        for line in text.components(separatedBy: "\n") {
            if line.hasPrefix("#") { continue }
            if line.hasPrefix("=== ") {
                flush()
                current = CorpusCase(name: String(line.dropFirst(4)), raw: [], status: 200, responses: 1, closes: false, body: nil)
                continue
            }
            guard var c = current else { continue }
            if line.hasPrefix("expect: ") {
                let parts = line.dropFirst(8).split(separator: " ")
                c.status = Int(parts[0])!
                c.responses = c.status == 200 ? 1 : 0
                for p in parts.dropFirst() {
                    if p == "close" { c.closes = true } else if p.hasPrefix("x") { c.responses = Int(p.dropFirst())! }
                }
                if c.status != 200 { c.closes = true }
            } else if line.hasPrefix("body:") {
                c.body = String(line.dropFirst(5).drop(while: { $0 == " " }))
            } else if line.hasPrefix("repeat: ") {
                let spec = line.dropFirst(8)
                let x = spec.lastIndex(of: "x")!
                let unit = unescape(String(spec[..<x]))
                for _ in 0..<Int(spec[spec.index(after: x)...])! { c.raw += unit }
            } else if line.hasPrefix("repeat-lines: ") {
                let spec = line.dropFirst(14)
                let x = spec.lastIndex(of: "x")!
                let unit = unescape(String(spec[..<x]))
                for _ in 0..<Int(spec[spec.index(after: x)...])! { c.raw += unit }
                c.raw += Array("\r\n".utf8)
            } else if !line.isEmpty {
                c.raw += unescape(line)
            }
            current = c
        }
        flush()
        return cases
    }

    static func unescape(_ s: String) -> [UInt8] {
        var out: [UInt8] = []
        let u = Array(s.utf8)
        var i = 0
        while i < u.count {
            if u[i] == 92, i + 1 < u.count {  // backslash
                switch u[i + 1] {
                case UInt8(ascii: "r"): out.append(13); i += 2; continue
                case UInt8(ascii: "n"): out.append(10); i += 2; continue
                case UInt8(ascii: "t"): out.append(9); i += 2; continue
                case 92: out.append(92); i += 2; continue
                case UInt8(ascii: "x"):
                    let hex = String(decoding: u[(i + 2)..<(i + 4)], as: UTF8.self)
                    out.append(UInt8(hex, radix: 16)!)
                    i += 4
                    continue
                default: break
                }
            }
            out.append(u[i])
            i += 1
        }
        return out
    }
}
