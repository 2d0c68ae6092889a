import Domain
import JSON
import NetCore
import Runtime

/// The completion routes: /v1/completions, /v1/chat/completions, cancel, /v1/models.
public final class CompletionAPI: @unchecked Sendable {
    let scheduler: CompletionScheduler
    let parser: CompletionRequestParser
    let metrics: Metrics
    let models: [String]
    let presets: PresetAPI?
    let startedEpoch = Int(clinux_epochSeconds())

    public init(scheduler: CompletionScheduler, parser: CompletionRequestParser, metrics: Metrics, models: [String], presets: PresetAPI?) {
        self.scheduler = scheduler
        self.parser = parser
        self.metrics = metrics
        self.models = models
        self.presets = presets
    }

    public func install(on api: APIRouter) {
        api.add("POST", "/v1/completions") { [self] call, reply in complete(call, reply, flavor: .text) }
        api.add("POST", "/v1/chat/completions") { [self] call, reply in complete(call, reply, flavor: .chat) }
        api.add("POST", "/v1/completions/{request_id}/cancel") { [self] call, reply in cancel(call, reply) }
        api.add("GET", "/v1/models") { [self] _, reply in listModels(reply) }
    }

    func complete(_ call: APICall, _ reply: APIReply, flavor: CompletionFlavor) {
        let presetID: String?
        do throws(APIError) {
            if let e = call.bodyError { throw APIError(.invalidRequest, "request body is not valid JSON: \(e)") }
            presetID = try CompletionRequestParser.presetID(in: call.body)
        } catch {
            metrics.completionsInvalid.add(1, ordering: .relaxed)
            reply.fail(error)
            return
        }
        guard let presetID else { return start(call, reply, flavor: flavor, preset: nil) }
        guard let presets else {
            reply.fail(.invalid("preset_id", "presets are not available on this node"))
            return
        }
        presets.load(id: presetID, for: call.identity, on: reply.loop) { [self] r in
            switch r {
            case .success(let preset): start(call, reply, flavor: flavor, preset: preset)
            case .failure(let e): reply.fail(e)
            }
        }
    }

    func start(_ call: APICall, _ reply: APIReply, flavor: CompletionFlavor, preset: Preset?) {
        var request: CompletionRequest
        do throws(APIError) {
            request = try parser.parse(call.body, flavor: flavor, preset: preset, newID: { RequestIDs.next(flavor) })
        } catch {
            metrics.completionsInvalid.add(1, ordering: .relaxed)
            reply.fail(error)
            return
        }
        request.ownerID = call.identity.userID
        request.keyID = call.identity.keyID
        let subscriber = reply.completionSubscriber(for: request)
        switch scheduler.submit(request, subscriber: subscriber) {
        case .failure(let e): reply.fail(e)
        case .success(let job): reply.track(job, subscriber: subscriber)
        }
    }

    func cancel(_ call: APICall, _ reply: APIReply) {
        let id = call.pathParameters["request_id"] ?? ""
        let status: String
        switch scheduler.cancel(requestID: id, owner: call.identity.userID) {
        case .notFound:
            reply.fail(APIError(.notFound, "no completion with request_id '\(id.prefix(128))'"))
            return
        case .alreadyFinished: status = "finished"
        case .cancelled: status = "cancelled"
        }
        var w = JSONWriter()
        w.beginObject()
        w.key("request_id"); w.string(id)
        w.key("status"); w.string(status)
        w.endObject()
        reply.respond(status: 200, json: w.bytes)
    }

    func listModels(_ reply: APIReply) {
        var w = JSONWriter()
        w.beginObject()
        w.key("object"); w.string("list")
        w.key("data")
        w.beginArray()
        for m in models {
            w.beginObject()
            w.key("id"); w.string(m)
            w.key("object"); w.string("model")
            w.key("created"); w.int(startedEpoch)
            w.key("owned_by"); w.string("playground")
            w.endObject()
        }
        w.endArray()
        w.endObject()
        reply.respond(status: 200, json: w.bytes)
    }
}

/// Request ids the node makes up: a per-process random prefix and a counter, unique and cheap.
enum RequestIDs {
    static let prefix: String = {
        var g = SystemRandomNumberGenerator()
        let alphabet = Array("abcdefghijklmnopqrstuvwxyz0123456789")
        return String((0..<10).map { _ in alphabet[Int(g.next() % UInt64(alphabet.count))] })
    }()
    static let counter = AtomicCounter()

    static func next(_ flavor: CompletionFlavor) -> String {
        (flavor == .chat ? "chatcmpl-" : "cmpl-") + prefix + String(counter.next(), radix: 36)
    }
}

import Synchronization
final class AtomicCounter: Sendable {
    private let value = Atomic<Int>(0)
    func next() -> Int { value.add(1, ordering: .relaxed).newValue }
}
