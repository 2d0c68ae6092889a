import Domain
import FleetCore
import JSON
import NetCore
import Runtime

/// The completion routes: /v1/completions, /v1/chat/completions, cancel, /v1/models.
public final class CompletionAPI: @unchecked Sendable {
    let completions: CompletionService
    let parser: CompletionRequestParser
    let metrics: Metrics
    let models: [String]
    let presets: PresetAPI?
    /// Per-user limits (nil: none, e.g. benchmarks).
    let admission: Admission?
    let startedEpoch = Int(wallClockNanos() / 1_000_000_000)

    public init(completions: CompletionService, parser: CompletionRequestParser, metrics: Metrics, models: [String], presets: PresetAPI?,
                admission: Admission? = nil) {
        self.completions = completions
        self.parser = parser
        self.metrics = metrics
        self.models = models
        self.presets = presets
        self.admission = admission
    }

    public func install(on api: APIRouter) {
        api.add("POST", "/v1/completions") { [self] call, reply in complete(call, reply, flavor: .text) }
        api.add("POST", "/v1/chat/completions") { [self] call, reply in complete(call, reply, flavor: .chat) }
        api.add("POST", "/v1/completions/{request_id}/cancel") { [self] call, reply in cancel(call, reply) }
        api.add("GET", "/v1/models") { [self] _, reply in listModels(reply) }
        api.add("GET", "/v1/models/{model}") { [self] call, reply in model(call.pathParameters["model"] ?? "", reply) }
    }

    func complete(_ call: APICall, _ reply: APIReply, flavor: CompletionFlavor) {
        let presetID: String?
        let version: Int?
        do throws(APIError) {
            if let e = call.bodyError { throw APIError(.invalidRequest, "request body is not valid JSON: \(e)") }
            presetID = try CompletionRequestParser.presetID(in: call.body)
            version = try CompletionRequestParser.presetVersion(in: call.body)
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
        let loaded: (@escaping (Result<Preset, APIError>) -> Void) -> Void = { done in
            if let version { presets.loadVersion(id: presetID, number: version, for: call.identity, on: reply.loop, done: done) } else {
                presets.load(id: presetID, for: call.identity, on: reply.loop, done: done)
            }
        }
        loaded { [self] r in
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
        guard let admission else { return submit(request, reply) }
        // Every completion counts, whatever its transport: admitted (a lease is held until it
        // ends), or refused before any work with how long to wait.
        let box = UncheckedBox((self, reply, request))
        admission.admit(user: request.ownerID, requestID: request.requestID) { outcome in
            let loop = box.value.1.loop
            let go: @Sendable () -> Void = {
                let (api, reply, request) = box.value
                api.admitted(outcome, request, reply)
            }
            if loop.inEventLoop { go() } else { loop.execute(go) }
        }
    }

    private func admitted(_ outcome: AdmissionOutcome, _ request: CompletionRequest, _ reply: APIReply) {
        switch outcome {
        case .admitted(let grant):
            var request = request
            request.fence = grant.fence
            reply.rateLimit(limit: grant.limit, remaining: grant.remaining, resetMs: grant.resetMs)
            submit(request, reply)
        case .ended, .running:
            // It ran (or runs no more) somewhere: only its result can be had, never a second run.
            var request = request
            request.replayOnly = true
            submit(request, reply)
        case .refused(let refusal):
            metrics.completionsLimited.add(1, ordering: .relaxed)
            if case .rateLimited(let limit, let ms) = refusal { reply.rateLimit(limit: limit, remaining: 0, resetMs: ms) }
            reply.fail(refusal.error)
        case .unavailable(let ms):
            metrics.completionsBusy.add(1, ordering: .relaxed)
            reply.fail(APIError(.serverBusy, "limits cannot be checked right now; retry shortly", retryAfterMs: ms))
        }
    }

    /// Takes the admission back: the request never started, so it uses no quota and its id can
    /// be retried at once.
    private func unadmit(_ request: CompletionRequest) {
        if request.fence != 0 { admission?.unadmit(user: request.ownerID, requestID: request.requestID, fence: request.fence) }
    }

    private func submit(_ request: CompletionRequest, _ reply: APIReply) {
        var request = request
        if reply.showsTokensLive { request.stream = true }
        guard reply.isOpen else {
            unadmit(request)  // the client left while it was being admitted: start nothing
            return
        }
        let subscriber = reply.completionSubscriber(for: request)
        switch completions.submit(request, subscriber: subscriber) {
        case .failure(let e):
            unadmit(request)  // refused (busy, draining): never started
            reply.fail(e)
        case .success(let stream): reply.track(stream, subscriber: subscriber)
        }
    }

    func cancel(_ call: APICall, _ reply: APIReply) {
        let id = call.pathParameters["request_id"] ?? ""
        let box = UncheckedBox(reply)
        completions.cancel(requestID: id, owner: call.identity.userID) { outcome in
            let answer: @Sendable () -> Void = {
                let reply = box.value
                let status: String
                switch outcome {
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
            let loop = box.value.loop
            if loop.inEventLoop { answer() } else { loop.execute(answer) }
        }
    }

    func listModels(_ reply: APIReply) {
        var w = JSONWriter()
        w.beginObject()
        w.key("object"); w.string("list")
        w.key("data")
        w.beginArray()
        for m in models { writeModel(m, &w) }
        w.endArray()
        w.endObject()
        reply.respond(status: 200, json: w.bytes)
    }

    /// `GET /v1/models/{id}`: one model in OpenAI's shape, or 404 `model_not_found`.
    func model(_ id: String, _ reply: APIReply) {
        guard models.contains(id) else {
            var e = APIError(.modelNotFound, "the model '\(id.prefix(100))' does not exist on this node; available: \(models.joined(separator: ", "))")
            e.field = "model"
            return reply.fail(e)
        }
        var w = JSONWriter()
        writeModel(id, &w)
        reply.respond(status: 200, json: w.bytes)
    }

    private func writeModel(_ id: String, _ w: inout JSONWriter) {
        w.beginObject()
        w.key("id"); w.string(id)
        w.key("object"); w.string("model")
        w.key("created"); w.int(startedEpoch)
        w.key("owned_by"); w.string("playground")
        w.endObject()
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

    /// This process, as the maker of the ids it makes up (a holder name in the fleet: its relay
    /// channel is `FleetChannels.gateway(self)`).
    static var maker: String { "id:" + prefix }

    /// The maker of an id shaped like the ones nodes make up, or nil.
    static func maker(of id: String) -> String? {
        let u = Array(id.utf8)
        let skip: Int
        if u.starts(with: Array("cmpl-".utf8)) { skip = 5 } else if u.starts(with: Array("chatcmpl-".utf8)) { skip = 9 } else { return nil }
        guard u.count > skip + 10, u[skip..<(skip + 10)].allSatisfy({ ($0 >= 97 && $0 <= 122) || ($0 >= 48 && $0 <= 57) }) else { return nil }
        return "id:" + String(decoding: u[skip..<(skip + 10)], as: UTF8.self)
    }
}

import Synchronization
final class AtomicCounter: Sendable {
    private let value = Atomic<Int>(0)
    func next() -> Int { value.add(1, ordering: .relaxed).newValue }
}
