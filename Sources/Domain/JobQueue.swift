/// A completion handed to the fleet: the request, the channel its events go to and when nobody
/// waits for it any more (`CompletionWire.Job`). Typed: an in-memory queue moves it as it is; a
/// queue between processes encodes it (`CompletionWire`).
public struct FleetJob: Sendable {
    public var request: CompletionRequest
    public var ticket: CompletionWire.Job
    /// The gateway's loop, for a worker in the same process (it runs the job there: no hop per
    /// token). Never leaves the process; nil from another.
    public var affinity: ObjectIdentifier?
    /// The gateway's stream itself, for a worker in the same process: events go straight to it
    /// (typed, no channel or registry lookup per event). Never leaves the process.
    public var replyTarget: RelayTarget?
    public init(request: CompletionRequest, ticket: CompletionWire.Job, affinity: ObjectIdentifier? = nil, replyTarget: RelayTarget? = nil) {
        self.request = request
        self.ticket = ticket
        self.affinity = affinity
        self.replyTarget = replyTarget
    }
}

/// Receives one stream's relay messages directly (a gateway's stream, in the worker's process).
public protocol RelayTarget: AnyObject, Sendable {
    func deliver(_ message: RelayMessage)
    /// Ended already (a job for it is not run).
    var isFinished: Bool { get }
    /// Holds more unsent output than it wants: the producer should wait.
    var isBacklogged: Bool { get }
}

extension RelayTarget {
    public var isBacklogged: Bool { false }
}

/// A job on the fleet's queue: the entry id, the job (nil: the entry could not be read — it is
/// acknowledged and dropped), and how often it was delivered.
public struct QueuedJob: Sendable {
    public let id: String
    public let job: FleetJob?
    public let deliveries: Int
    public init(id: String, job: FleetJob?, deliveries: Int) {
        self.id = id
        self.job = job
        self.deliveries = deliveries
    }
}

/// What enqueueing a job did.
public enum Enqueued: Sendable, Equatable {
    case queued(id: String)
    /// The request_id already has a stream, held by this gateway: attach to it instead.
    case duplicate(holder: String)
}

public enum JobQueueError: Error, Sendable, Equatable {
    /// The backlog is full: refuse at once (server_busy with retry_after_ms).
    case busy(backlog: Int)
    case unavailable
}

/// A queue that says when a job arrives (in memory: claims do not wait, the worker is woken).
public protocol JobArrivals: AnyObject, Sendable {
    func whenJobArrives(_ wake: @escaping @Sendable () -> Void)
    /// Whether a job waits to be claimed (cheap: no lock).
    var hasWaitingJobs: Bool { get }
}

/// The cross-node job queue (a port): gateways enqueue; workers claim only when they have a free
/// slot (so the least loaded worker wins), acknowledge however a job ends, and take over jobs whose
/// worker went silent. `done` may run on any thread.
public protocol JobQueue: AnyObject, Sendable {
    /// Adds a job and records `holder` (the gateway relaying it) under `streamKey` (owner and
    /// request_id), unless that key already has a stream.
    func enqueue(_ job: FleetJob, streamKey: String, holder: String, done: @escaping @Sendable (Result<Enqueued, JobQueueError>) -> Void)
    /// Up to `max` new jobs for `consumer`, waiting at most `blockMs` for one (0: do not wait).
    func claim(consumer: String, max: Int, blockMs: Int, done: @escaping @Sendable (Result<[QueuedJob], JobQueueError>) -> Void)
    func ack(_ id: String)
    /// Takes back a job its gateway no longer waits for (cancelled, waited too long); true if it
    /// was still waiting, so no worker will ever run it.
    func withdraw(_ id: String) -> Bool
    /// Jobs on the queue (waiting or being handed over), or nil if unknown.
    func backlog(done: @escaping @Sendable (Int?) -> Void)
    /// Jobs pending longer than `minIdleMs` move to `consumer`; those delivered `maxDeliveries`
    /// times are dead-lettered instead (their clients must be told).
    func reclaim(consumer: String, minIdleMs: Int, max: Int, maxDeliveries: Int,
                 done: @escaping @Sendable (Result<(claimed: [QueuedJob], dead: [QueuedJob]), JobQueueError>) -> Void)
}

extension JobQueue {
    /// A queue between processes cannot be sure no worker holds the job: its worker checks the
    /// ticket's expiry, and the gateway stops one that starts it anyway.
    public func withdraw(_ id: String) -> Bool { false }
}

/// Completion events between nodes (a port): a worker publishes each event to the channel of the
/// gateway that holds the client, as it happens (never batched by time); the gateway subscribes
/// to its own channel. `done`/`onMessage` may run on any thread.
public protocol EventRelay: AnyObject, Sendable {
    /// `done` gets how many subscribers received it (0: nobody listens — stop the generation), or
    /// nil if the relay could not be reached.
    func publish(channel: String, _ message: RelayMessage, done: @escaping @Sendable (Int?) -> Void)
    func subscribe(channel: String, _ onMessage: @escaping @Sendable (RelayMessage) -> Void)
}

/// Where a request_id's stream lives across the fleet (a port): the gateway relaying it while it
/// runs, and its transcript for a while after it ended (attach and replay on another gateway).
public protocol StreamDirectory: AnyObject, Sendable {
    func lookup(streamKey: String, done: @escaping @Sendable (Result<(holder: String?, transcript: [UInt8]?), JobQueueError>) -> Void)
    /// Keeps a finished stream's transcript (and its locator) for `ttlMs`.
    func keepFinished(streamKey: String, transcript: [UInt8], ttlMs: Int)
    /// A finished stream that will not be replayed elsewhere: its locator goes now, if it still
    /// names `holder` (another gateway's locator for the same id is never dropped).
    func forget(streamKey: String, holder: String)
    /// A finished stream whose transcript is not kept: its locator stays for `ttlMs` (the id is
    /// taken; attach elsewhere asks the holder).
    func keepLocator(streamKey: String, ttlMs: Int)
    /// A stream that runs without a queue entry (on its gateway's own worker) records its holder,
    /// so another gateway finds it by request_id.
    func hold(streamKey: String, holder: String)
    /// Whether finished streams are kept at all (false for a node on its own: its registry is
    /// the directory, and a transcript is not worth writing out).
    var keepsTranscripts: Bool { get }
}

extension StreamDirectory {
    public var keepsTranscripts: Bool { true }
    public func hold(streamKey: String, holder: String) {}
}

public enum StreamKey {
    /// One request's key in the fleet: unambiguous whatever characters owner and id hold.
    public static func make(owner: String, requestID: String) -> String { "\(owner.utf8.count):\(owner):\(requestID)" }

    public static func parse(_ key: String) -> (owner: String, requestID: String)? {
        let u = Array(key.utf8)
        guard let colon = u.firstIndex(of: 58), let n = Int(String(decoding: u[..<colon], as: UTF8.self)), n >= 0,
              colon + 1 + n < u.count, u[colon + 1 + n] == 58 else { return nil }
        return (String(decoding: u[(colon + 1)..<(colon + 1 + n)], as: UTF8.self), String(decoding: u[(colon + 2 + n)...], as: UTF8.self))
    }
}

/// The relay channel of each role of a node.
public enum FleetChannels {
    public static func gateway(_ node: String) -> String { "pg:gw:" + node }
    public static func worker(_ node: String) -> String { "pg:wk:" + node }
}
