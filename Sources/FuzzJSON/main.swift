// libFuzzer target for the JSON parser (every request body and WebSocket message goes through it).
// Invariants: no crash or hang on any bytes; what parses writes back to JSON that parses to the
// same value; and the writer's output is canonical (writing that value again gives the same bytes).
import FuzzSupport
import JSON

func fuzzOne(_ data: [UInt8]) {
    guard let value = try? JSONParser.parse(data) else { return }
    var w = JSONWriter()
    w.value(value)
    guard let again = try? JSONParser.parse(w.bytes) else { preconditionFailure("written JSON does not parse: \(w.string)") }
    // Numbers may lose digits once (Double); after that the text is stable.
    var w2 = JSONWriter()
    w2.value(again)
    precondition(w2.bytes == w.bytes, "writing is not stable")
    if !containsNumber(value) { precondition(again == value, "round trip changed the value") }
}

func containsNumber(_ v: JSONValue) -> Bool {
    switch v {
    case .number: return true
    case .array(let a): return a.contains(where: containsNumber)
    case .object(let o): return o.pairs.contains { containsNumber($0.value) }
    default: return false
    }
}

fuzzMain(fuzzOne)
