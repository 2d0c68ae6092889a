import Domain
import FleetCore
import NetCore
import Runtime

/// One generation on a worker: drives one model backend into one sink (the relay publisher to
/// the gateway that holds the client). No registry, no replay, no client-side timings: the
/// gateway makes those. Confined to `loop`.
final class GenerationRun: GenerationSink, @unchecked Sendable {
    let request: CompletionRequest
    let loop: EventLoop
    let sink: CompletionSubscriber
    let metrics: Metrics
    private let onEnd: (GenerationRun, CompletionEvent) -> Void
    private var generation: RunningGeneration?
    private var tokens = 0
    private var ended = false
    /// The worker's own view of its generation (for its metrics; the gateway times the client's).
    private var startedNanos: UInt64 = 0
    private var firstTokenNanos: UInt64?

    init(request: CompletionRequest, loop: EventLoop, sink: CompletionSubscriber, metrics: Metrics,
         onEnd: @escaping (GenerationRun, CompletionEvent) -> Void) {
        self.request = request
        self.metrics = metrics
        self.loop = loop
        self.sink = sink
        self.onEnd = onEnd
    }

    /// Says "started" (the gateway learns which worker runs it) and starts the model.
    func start(backend: ModelBackend, worker: String, createdEpoch: Int) {
        sink.receive(.accepted(requestID: request.requestID, model: request.parameters.model, created: createdEpoch))
        startedNanos = monotonicNanos()
        let seed = request.parameters.seed ?? GenerationSeeds.next()
        let run = backend.start(request, seed: seed, on: loop, sink: self)
        // A backend may end inside `start` (a zero-pace model, a refusal).
        if !ended { generation = run }
    }

    /// Stops it now: the gateway hears "cancelled" (if it still listens).
    func cancel() {
        guard !ended else { return }
        let usage = generation?.cancel() ?? Usage(promptTokens: 0, completionTokens: tokens)
        end(.done(.cancelled, usage, timings(upstream: "worker")))
    }

    func token(_ text: String) { delta(text, nil) }

    func chunk(_ text: String, _ chunk: String) { delta(text, chunk) }

    private func delta(_ text: String, _ chunk: String?) {
        guard !ended else { return }
        if firstTokenNanos == nil { firstTokenNanos = monotonicNanos() }
        sink.receive(.delta(index: tokens, text: text, chunk: chunk))
        metrics.tokensStreamed.add(1, ordering: .relaxed)
        tokens += 1
    }

    var isBacklogged: Bool { sink.isBacklogged }

    func finished(_ reason: FinishReason, usage: Usage, upstream: String) {
        // Only `upstream` matters to the gateway: it times the stream as its client saw it.
        end(.done(reason, usage, timings(upstream: upstream)))
    }

    func failed(_ error: APIError, dropTransport: Bool) {
        guard !ended else { return }
        if dropTransport {
            ended = true
            generation = nil
            sink.abortTransport()
            onEnd(self, .failed(error, tokensSoFar: tokens))
            return
        }
        end(.failed(error, tokensSoFar: tokens))
    }

    private func timings(upstream: String) -> Timings {
        Timings(created: startedNanos, started: startedNanos, firstToken: firstTokenNanos, end: monotonicNanos(), upstream: upstream)
    }

    private func end(_ event: CompletionEvent) {
        guard !ended else { return }
        ended = true
        generation = nil
        sink.receive(event)
        onEnd(self, event)
    }
}
