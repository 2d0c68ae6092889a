import Foundation
import RedisCoordination
import XCTest

/// Live suites written for one Redis, run again on a real Redis Cluster (3 masters, 3 replicas,
/// one per class): the same answers through slot routing, keys of one call in one slot.
enum ClusterForClass {
    nonisolated(unsafe) static var running: [String: (dir: String, url: String)] = [:]

    static func start(_ name: String) {
        guard running[name] == nil, let c = try? ClusterHarness.start() else { return }
        running[name] = (c.dir, c.url)
    }

    static func stop(_ name: String) {
        if let c = running.removeValue(forKey: name) { ClusterHarness.stop(c.dir) }
    }

    static func endpoint(_ name: String) throws -> RedisEndpoint {
        guard let url = running[name]?.url, let e = RedisEndpoint(url: url) else {
            XCTFail("the cluster for \(name) did not start")
            throw RedisTestCase.NoRedis()
        }
        return e
    }
}

// Linux's XCTest finds only the tests a class declares itself: each suite's tests are named again.

final class LivePresetCacheOnClusterTests: LivePresetCacheTests {
    override class func setUp() { super.setUp(); ClusterForClass.start("presets") }
    override class func tearDown() { ClusterForClass.stop("presets"); super.tearDown() }
    override func setUpWithError() throws {
        try super.setUpWithError()
        endpoint = try ClusterForClass.endpoint("presets")
    }
    override func testFillNeverReplacesNewerOrPendingAndTombstonesHold() throws { try super.testFillNeverReplacesNewerOrPendingAndTombstonesHold() }
    override func testRecentKeepsTheNewestUpToTheCap() throws { try super.testRecentKeepsTheNewestUpToTheCap() }
    override func testOutboxDrainReadsSettlesAndFinishes() throws { try super.testOutboxDrainReadsSettlesAndFinishes() }
    override func testOutboxIsBoundedPerUser() throws { try super.testOutboxIsBoundedPerUser() }
    override func testOutboxIsBoundedInBytesPerUserAndInTotal() throws { try super.testOutboxIsBoundedInBytesPerUserAndInTotal() }
    override func testIdentitiesAreSharedAndRevocationsWin() throws { try super.testIdentitiesAreSharedAndRevocationsWin() }
}

final class LiveAdmissionOnClusterTests: LiveAdmissionScriptTests {
    override class func setUp() { super.setUp(); ClusterForClass.start("admission") }
    override class func tearDown() { ClusterForClass.stop("admission"); super.tearDown() }
    override func setUpWithError() throws {
        try super.setUpWithError()
        endpoint = try ClusterForClass.endpoint("admission")
    }
    override func testWindowEdgeIsExact() throws { try super.testWindowEdgeIsExact() }
    override func testConcurrencyFirstIdempotencyRenewRelease() throws { try super.testConcurrencyFirstIdempotencyRenewRelease() }
    override func testEndedIDsAreNotReadmittedAndUnadmitRefunds() throws { try super.testEndedIDsAreNotReadmittedAndUnadmitRefunds() }
    override func testQuotaOverrideAndScriptFlush() throws { try super.testQuotaOverrideAndScriptFlush() }
}

final class LiveJobQueueOnClusterTests: LiveJobQueueTests {
    override class func setUp() { super.setUp(); ClusterForClass.start("queue") }
    override class func tearDown() { ClusterForClass.stop("queue"); super.tearDown() }
    override func setUpWithError() throws {
        try super.setUpWithError()
        endpoint = try ClusterForClass.endpoint("queue")
    }
    override func testBacklogIsBoundedAndClaimsDoNotOverlap() throws { try super.testBacklogIsBoundedAndClaimsDoNotOverlap() }
    override func testSilentWorkersJobsAreReclaimedThenDeadLettered() throws { try super.testSilentWorkersJobsAreReclaimedThenDeadLettered() }
    override func testBlockingClaimWaitsForAJob() throws { try super.testBlockingClaimWaitsForAJob() }
    override func testAnUnreadableEntryIsClaimedWithoutAJob() throws { try super.testAnUnreadableEntryIsClaimedWithoutAJob() }
    override func testArgumentsAreBinarySafe() throws { try super.testArgumentsAreBinarySafe() }
    override func testTheLocatorFindsTheHolderAndRefusesASecondStreamForOneRequest() throws { try super.testTheLocatorFindsTheHolderAndRefusesASecondStreamForOneRequest() }
}

final class LiveShardedJobQueueOnClusterTests: LiveShardedJobQueueTests {
    override class func setUp() { super.setUp(); ClusterForClass.start("sharded") }
    override class func tearDown() { ClusterForClass.stop("sharded"); super.tearDown() }
    override func setUpWithError() throws {
        try super.setUpWithError()
        endpoint = try ClusterForClass.endpoint("sharded")
    }
    override func testJobsSpreadClaimsStayWithinWhatIsAskedAndAcksFindTheirShard() throws { try super.testJobsSpreadClaimsStayWithinWhatIsAskedAndAcksFindTheirShard() }
    override func testTheBacklogBoundIsFleetWide() throws { try super.testTheBacklogBoundIsFleetWide() }
    override func testReclaimAndDeadLettersPerShard() throws { try super.testReclaimAndDeadLettersPerShard() }
}
