import Foundation
import KilnBusClient
import KilnMessages
import Testing

@testable import KilnCoordination
@testable import KilnGateway

/// `DispatchHoldback`: what overtakes a worker's acceptance is held in order and handed back once the
/// offer is settled — and no more than its bound per job, since nothing held has passed a sender check.
@Suite struct DispatchHoldbackTests {
    static func event(_ seq: Int, job: String = "j1") -> (BuildEvent, BusMessage) {
        var e = BuildEvent(jobID: job, seq: seq, type: .log)
        e.workerID = "w1"
        return (e, BusMessage(subject: Subjects.events(job, worker: "w1")))
    }

    @Test func heldInArrivalOrderUntilReleased() {
        var h = DispatchHoldback(maxEvents: 8, maxRequests: 2)
        var held = h.hold(Self.event(1).0, Self.event(1).1)
        #expect(!held, "nothing is held for a job not being offered")
        h.begin("j1")
        for seq in 1...3 {
            held = h.hold(Self.event(seq).0, Self.event(seq).1)
            #expect(held)
        }
        var requests: [Bool] = []
        for (subject, job) in [("a", "j1"), ("b", "j1"), ("c", "j1"), ("x", "j2")] { requests.append(h.hold(request: BusMessage(subject: subject), of: job)) }
        #expect(requests == [true, true, false, false], "requests are bounded too, and held only for a job being offered")
        var order: [Int] = []
        while let (e, _) = h.nextEvent(of: "j1") { order.append(e.seq) }
        #expect(order == [1, 2, 3])
        #expect(h.isHolding("j1"), "until released, later arrivals are still held")
        #expect(h.release("j1").map(\.subject) == ["a", "b"])
        #expect(!h.isHolding("j1") && h.release("j1").isEmpty)
    }

    /// Hostile: a worker flooding a job during its offer window. Without the bound every event was kept.
    @Test func aFloodInTheOfferWindowIsBoundedPerJob() {
        var h = DispatchHoldback(maxEvents: 256)
        h.begin("j1")
        var held = 0
        for seq in 1...100_000 where h.hold(Self.event(seq).0, Self.event(seq).1) { held += 1 }
        #expect(held == 256)
        var first: Int?
        var count = 0
        while let (e, _) = h.nextEvent(of: "j1") {
            first = first ?? e.seq
            count += 1
        }
        #expect(first == 1 && count == 256, "the first ones are kept: the worker replays the rest on the gap")
    }
}
