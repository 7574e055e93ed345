import KilnBusClient
import KilnMessages

/// What a worker sends about a job while the gateway's offer of it is still being settled: its first
/// events and requests (a source chunk, a result chunk) can overtake its acceptance on the way here, and
/// wait until the assignment is recorded instead of being dropped as coming from an unknown worker. A
/// pure part of the coordinator (#30), bounded per job: nothing here has passed a sender check yet, so
/// a worker flooding a job in its offer window must not grow the gateway (#29). What is dropped comes
/// again: a worker replays its unacknowledged events when the gateway sees a gap, and resends
/// unanswered requests.
struct DispatchHoldback {
    /// Most events and requests held for one job.
    let maxEvents: Int
    let maxRequests: Int
    private var held: [String: Held] = [:]

    struct Held {
        var events: [(BuildEvent, BusMessage)] = []
        /// The next event `nextEvent` hands back: a cursor, so the drain never shifts or copies the array.
        var next = 0
        var requests: [BusMessage] = []
    }

    init(maxEvents: Int = 256, maxRequests: Int = 64) {
        precondition(maxEvents > 0 && maxRequests > 0, "a holdback holds at least one of each")
        self.maxEvents = maxEvents
        self.maxRequests = maxRequests
    }

    /// The job's offer starts: from now until `release`, its messages are held.
    mutating func begin(_ jobID: String) { held[jobID] = Held() }

    func isHolding(_ jobID: String) -> Bool { held[jobID] != nil }

    /// Holds an event of a job being offered; false when the job's holdback is full (dropped).
    mutating func hold(_ event: BuildEvent, _ message: BusMessage) -> Bool {
        guard let count = held[event.jobID]?.events.count, count < maxEvents else { return false }
        held[event.jobID]?.events.append((event, message))
        return true
    }

    /// Holds a source or result-chunk request of a job being offered; false when full (dropped).
    mutating func hold(request message: BusMessage, of jobID: String) -> Bool {
        guard let count = held[jobID]?.requests.count, count < maxRequests else { return false }
        held[jobID]?.requests.append(message)
        return true
    }

    /// The next held event of the job, in arrival order (the offer is settled: they are handled now;
    /// one at a time, because handling one may hold nothing new but must see the ones before it stored).
    mutating func nextEvent(of jobID: String) -> (BuildEvent, BusMessage)? {
        guard let h = held[jobID], h.next < h.events.count else { return nil }
        held[jobID]?.next += 1
        return h.events[h.next]
    }

    /// Ends the job's holdback; returns the requests held, in arrival order.
    mutating func release(_ jobID: String) -> [BusMessage] {
        held.removeValue(forKey: jobID)?.requests ?? []
    }
}
