import Worker
import XCTest

/// The worker's slots as a pure state machine: no sockets, no sleeps.
final class SlotTableTests: XCTestCase {
    func testClaimsNeverReserveMoreThanFreeSlots() {
        var t = SlotTable(slots: 3)
        XCTAssertEqual(t.reserve(upTo: 32), 3)
        XCTAssertEqual(t.reserve(upTo: 32), 0, "all spoken for")
        t.claimed(1, of: 3)
        XCTAssertEqual(t.free, 2, "a claim that brought one job gives the other two back")
        t.started()
        XCTAssertEqual(t.running, 1)
        XCTAssertEqual(t.reserved, 0)
        XCTAssertEqual(t.reserve(upTo: 1), 1)
        XCTAssertEqual(t.free, 1)
    }

    func testTwoQueuesShareTheSlots() {
        // The fleet's queue and the in-memory fallback claim from one table.
        var t = SlotTable(slots: 2)
        let fleet = t.reserve(upTo: 32)
        let local = t.reserve(upTo: 32)
        XCTAssertEqual(fleet + local, 2)
        t.claimed(0, of: fleet)  // the fleet's claim came back empty (or failed)
        XCTAssertEqual(t.free, fleet)
    }

    func testDroppedAndFinishedFreeTheirSlots() {
        var t = SlotTable(slots: 2)
        _ = t.reserve(upTo: 2)
        t.claimed(2, of: 2)
        t.dropped()  // unreadable or expired: never started
        t.started()
        XCTAssertEqual(t.inFlight, 1)
        XCTAssertTrue(t.finished(), "a freed slot is claimed for at once")
        XCTAssertEqual(t.inFlight, 0)
        XCTAssertEqual(t.free, 2)
    }

    func testDrainingTakesNothingNewAndLetsRunningFinish() {
        var t = SlotTable(slots: 4)
        _ = t.reserve(upTo: 1)
        t.claimed(1, of: 1)
        t.started()
        t.drain()
        XCTAssertEqual(t.reserve(upTo: 4), 0)
        XCTAssertFalse(t.finished(), "no claim after the last one ends while draining")
        XCTAssertEqual(t.running, 0)
    }

    func testAtLeastOneSlot() {
        var t = SlotTable(slots: 0)
        XCTAssertEqual(t.slots, 1)
        XCTAssertEqual(t.reserve(upTo: 5), 1)
    }

    func testAClaimThatAnswersAtOnceTakesOverSlotsAWaitingClaimHolds() {
        var t = SlotTable(slots: 2)
        XCTAssertEqual(t.reserveWaiting(upTo: 32), 2, "the fleet's blocking read holds both")
        XCTAssertEqual(t.free, 0)
        XCTAssertEqual(t.available, 2)
        XCTAssertEqual(t.reserve(upTo: 1), 0, "an ordinary claim does not take them")
        XCTAssertEqual(t.reservePreempting(upTo: 1), 1, "this process's own job does")
        t.claimed(1, of: 1)
        t.started()
        // The blocking read returns two jobs: one slot is still its own, the other runs over.
        XCTAssertEqual(t.claimedWaiting(2), 1)
        t.started()
        t.started()
        XCTAssertEqual(t.running, 3)
        XCTAssertEqual(t.free, 0)
        XCTAssertEqual(t.available, 0)
        XCTAssertEqual(t.reservePreempting(upTo: 1), 0, "nothing more until it is back under the slots")
        XCTAssertTrue(t.finished())
        XCTAssertEqual(t.available, 0)
        XCTAssertTrue(t.finished())
        XCTAssertEqual(t.reserveWaiting(upTo: 32), 1)
        XCTAssertEqual(t.claimedWaiting(0), 0, "an empty read gives its slot back")
        XCTAssertEqual(t.free, 1)
        t.drain()
        XCTAssertEqual(t.reserveWaiting(upTo: 32), 0)
        XCTAssertEqual(t.reservePreempting(upTo: 32), 0)
    }
}
