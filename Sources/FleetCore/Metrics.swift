import Domain
import Runtime
import Synchronization

/// The node's metrics (Prometheus text format at /metrics).
public final class Metrics: Sendable {
    public let wsConnections = Atomic<Int>(0)
    public let queueLength = Atomic<Int>(0)
    public let activeGenerations = Atomic<Int>(0)
    public let tokensStreamed = Atomic<Int>(0)
    public let completionsDone = Atomic<Int>(0)
    public let completionsCancelled = Atomic<Int>(0)
    public let completionsLength = Atomic<Int>(0)
    public let completionsError = Atomic<Int>(0)
    public let completionsBusy = Atomic<Int>(0)
    public let completionsInvalid = Atomic<Int>(0)
    public let completionsLimited = Atomic<Int>(0)
    /// Fleet: jobs on the shared queue (as last seen), taken over from silent workers,
    /// dead-lettered, and streams whose worker went silent.
    public let jobsBacklog = Atomic<Int>(0)
    public let jobsReclaimed = Atomic<Int>(0)
    public let jobsDeadLettered = Atomic<Int>(0)
    public let streamsInterrupted = Atomic<Int>(0)
    /// Presets: reads answered by the shared cache or not, reads answered from the cache because
    /// the database was down, writes queued in the outbox, and queued writes the replayer settled.
    public let presetCacheHits = Atomic<Int>(0)
    public let presetCacheMisses = Atomic<Int>(0)
    public let presetReadsDegraded = Atomic<Int>(0)
    public let presetWritesQueued = Atomic<Int>(0)
    /// Preset writes refused because the outbox reached a bound (user count, user bytes, total bytes).
    public let presetWritesRefusedFull = Mutex<[OutboxBound: Int]>([:])
    public let presetWritesReplayed = Atomic<Int>(0)
    public let presetWritesFailed = Atomic<Int>(0)
    public let ttft = Histogram(bounds: [1, 2, 5, 10, 25, 50, 100, 150, 200, 300, 500, 1000, 2000, 5000])
    public let total = Histogram(bounds: [5, 10, 25, 50, 100, 250, 500, 1000, 2000, 5000, 10000, 30000, 60000])

    /// Counts a completion that ended with `reason` and records its times.
    public func recordFinished(_ reason: FinishReason, timings: Timings) {
        switch reason {
        // An upstream's own reasons (tool calls, content filter) are answers that ended by themselves.
        case .stop, .toolCalls, .contentFilter, .functionCall: completionsDone.add(1, ordering: .relaxed)
        case .length: completionsLength.add(1, ordering: .relaxed)
        case .cancelled: completionsCancelled.add(1, ordering: .relaxed)
        }
        if let t = timings.ttftMs { ttft.record(ms: t) }
        total.record(ms: timings.totalMs)
    }

    /// Names start with this ("playground" for what clients see, "playground_worker" for the
    /// generations a worker runs for the fleet).
    public let prefix: String

    public init(prefix: String = "playground") { self.prefix = prefix }

    public func render() -> String {
        var out = ""
        let p = prefix
        func gauge(_ n: String, _ h: String, _ v: Int) { out += "# HELP \(n) \(h)\n# TYPE \(n) gauge\n\(n) \(v)\n" }
        gauge("\(p)_ws_connections", "Open WebSocket connections.", wsConnections.load(ordering: .relaxed))
        gauge("\(p)_queue_length", "Completions waiting for a worker slot.", queueLength.load(ordering: .relaxed))
        gauge("\(p)_active_generations", p == "playground" ? "Completions in flight on this node (relayed to clients, or running on its worker slots)." : "Generations running on this node's worker slots.", activeGenerations.load(ordering: .relaxed))
        out += "# HELP \(p)_tokens_streamed_total Tokens sent to clients.\n# TYPE \(p)_tokens_streamed_total counter\n"
        out += "\(p)_tokens_streamed_total \(tokensStreamed.load(ordering: .relaxed))\n"
        out += "# HELP \(p)_completions_total Completions by outcome.\n# TYPE \(p)_completions_total counter\n"
        let outcomes: [(String, Int)] = [
            ("stop", completionsDone.load(ordering: .relaxed)), ("length", completionsLength.load(ordering: .relaxed)),
            ("cancelled", completionsCancelled.load(ordering: .relaxed)), ("error", completionsError.load(ordering: .relaxed)),
            ("busy", completionsBusy.load(ordering: .relaxed)), ("invalid", completionsInvalid.load(ordering: .relaxed)),
            ("limited", completionsLimited.load(ordering: .relaxed)),
        ]
        for (outcome, v) in outcomes { out += "\(p)_completions_total{outcome=\"\(outcome)\"} \(v)\n" }
        // The worker's view of the queue (a serve node names it playground_worker_jobs_*).
        gauge("\(p)_jobs_backlog", "Jobs on the fleet's queue, as last seen.", jobsBacklog.load(ordering: .relaxed))
        for (n, h, v) in [("\(p)_jobs_reclaimed_total", "Jobs taken over from a silent worker.", jobsReclaimed.load(ordering: .relaxed)),
                          ("\(p)_jobs_dead_lettered_total", "Jobs given up after too many deliveries.", jobsDeadLettered.load(ordering: .relaxed))] {
            out += "# HELP \(n) \(h)\n# TYPE \(n) counter\n\(n) \(v)\n"
        }
        if p == "playground" {
            let si = "playground_streams_interrupted_total"
            out += "# HELP \(si) Streams whose worker went silent.\n# TYPE \(si) counter\n\(si) \(streamsInterrupted.load(ordering: .relaxed))\n"
            let hits = presetCacheHits.load(ordering: .relaxed), misses = presetCacheMisses.load(ordering: .relaxed)
            out += "# HELP playground_preset_cache_requests_total Preset reads by id, answered by the shared cache (hit) or not (miss).\n"
            out += "# TYPE playground_preset_cache_requests_total counter\n"
            out += "playground_preset_cache_requests_total{result=\"hit\"} \(hits)\n"
            out += "playground_preset_cache_requests_total{result=\"miss\"} \(misses)\n"
            let ratio = hits + misses == 0 ? 0 : Double(hits) / Double(hits + misses)
            out += "# HELP playground_preset_cache_hit_ratio Share of preset reads by id the shared cache answered, since start.\n"
            out += "# TYPE playground_preset_cache_hit_ratio gauge\nplayground_preset_cache_hit_ratio \(ratio)\n"
            for (n, h, v) in [("playground_preset_reads_degraded_total", "Preset reads answered from the cache because the database was down.", presetReadsDegraded.load(ordering: .relaxed)),
                              ("playground_preset_writes_queued_total", "Preset writes accepted into the outbox (database down, or writes already waiting).", presetWritesQueued.load(ordering: .relaxed)),
                              ("playground_preset_writes_replayed_total", "Queued preset writes applied to the database by this node.", presetWritesReplayed.load(ordering: .relaxed)),
                              ("playground_preset_writes_failed_total", "Queued preset writes that could not be applied any more (kept for their owner).", presetWritesFailed.load(ordering: .relaxed))] {
                out += "# HELP \(n) \(h)\n# TYPE \(n) counter\n\(n) \(v)\n"
            }
            let n = "playground_preset_writes_refused_full_total"
            out += "# HELP \(n) Preset writes refused during an outage because the outbox reached a bound.\n# TYPE \(n) counter\n"
            for bound in [OutboxBound.userCount, .userBytes, .totalBytes] {
                out += "\(n){bound=\"\(bound.rawValue)\"} \(presetWritesRefusedFull.withLock { $0[bound] ?? 0 })\n"
            }
        }
        ttft.render("\(p)_ttft_ms", help: "Time to first token, milliseconds.", into: &out)
        total.render("\(p)_completion_total_ms", help: "Whole completion latency, milliseconds.", into: &out)
        return out
    }
}
