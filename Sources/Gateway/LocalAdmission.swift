import Domain
import Runtime
import Synchronization

/// Admission in this process's memory: the ledger behind one mutex, on the system clock. Serves a
/// single node, the tests, and (with quotas divided by the live nodes) a fleet node whose Redis is
/// unreachable.
public final class LocalAdmission: Admission, @unchecked Sendable {
    private let ledger: Mutex<AdmissionLedger>
    private let quotas: @Sendable (String) -> Quota
    private let now: @Sendable () -> UInt64
    private let admissions = Atomic<Int>(0)
    public let leaseTTLNanos: UInt64

    public init(quota: @escaping @Sendable (String) -> Quota, leaseTTLNanos: UInt64 = 30_000_000_000,
                windowNanos: UInt64 = 60_000_000_000, now: @escaping @Sendable () -> UInt64 = { monotonicNanos() }) {
        ledger = Mutex(AdmissionLedger(windowNanos: windowNanos, leaseTTLNanos: leaseTTLNanos))
        quotas = quota
        self.now = now
        self.leaseTTLNanos = leaseTTLNanos
    }

    public func admit(user: String, requestID: String, done: @escaping @Sendable (AdmissionOutcome) -> Void) {
        let t = now()
        let q = quotas(user)
        // Idle users are forgotten now and then, so memory follows activity, not history.
        let sweep = admissions.add(1, ordering: .relaxed).newValue % 4096 == 0
        let outcome = ledger.withLock { l in
            if sweep { l.sweep(now: t) }
            return l.admit(user: user, requestID: requestID, quota: q, now: t)
        }
        done(outcome)
    }

    public func renew(user: String, requestID: String) {
        let t = now()
        _ = ledger.withLock { $0.renew(user: user, requestID: requestID, now: t) }
    }

    public func release(user: String, requestID: String) {
        ledger.withLock { $0.release(user: user, requestID: requestID) }
    }

    public func unadmit(user: String, requestID: String, fence: Int64) {
        ledger.withLock { $0.unadmit(user: user, requestID: requestID, fence: fence) }
    }

    public func leasesHeld(user: String) -> Int {
        let t = now()
        return ledger.withLock { $0.leasesHeld(user: user, now: t) }
    }
}
