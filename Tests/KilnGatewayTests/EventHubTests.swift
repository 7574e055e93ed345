import KilnGateway
import NIOCore
import NIOPosix
import Testing

/// The live half of SSE without sockets: fan-out to event loops, per-client order, slow clients.
@Suite struct EventHubTests {
    static let group = MultiThreadedEventLoopGroup(numberOfThreads: 2)

    func event(_ job: String, _ seq: Int, _ type: String = "log") -> StoredEvent {
        StoredEvent(jobID: job, seq: seq, type: type, data: #"{"seq":\#(seq)}"#)
    }

    @Test func framesAreEncodedOnceAsSSE() {
        let frame = SSEFrame(event("j1", 7, "phase"))
        #expect(String(buffer: frame.bytes) == "id: 7\nevent: phase\ndata: {\"seq\":7}\n\n")
        #expect(!frame.isTerminal)
        #expect(SSEFrame(event("j1", 8, "done")).isTerminal)
    }

    @Test func everySubscriberOfTheJobGetsEveryEventInOrder() async {
        let hub = EventHub(backlog: 100)
        let loops = [Self.group.next(), Self.group.next()]
        let subs = (0..<6).map { hub.subscribe(job: "j1", on: loops[$0 % 2]) }
        let other = hub.subscribe(job: "j2", on: loops[0])
        #expect(hub.clientCount == 7)
        for seq in 1...50 { hub.publish(event("j1", seq)) }
        for (_, queue) in subs {
            var seen: [Int] = []
            while seen.count < 50, case .events(let frames) = await queue.next() { seen += frames.map(\.seq) }
            #expect(seen == Array(1...50))
        }
        hub.publish(event("j2", 1))
        guard case .events(let frames) = await other.queue.next() else { Issue.record("j2 got nothing"); return }
        #expect(frames.map(\.seq) == [1])
        for (id, _) in subs { hub.unsubscribe(job: "j1", id: id) }
        hub.unsubscribe(job: "j2", id: other.id)
        #expect(hub.clientCount == 0)
    }

    @Test func aClientThatFallsBehindIsCutOffAndOthersAreNot() async {
        let hub = EventHub(backlog: 10)
        let slow = hub.subscribe(job: "j", on: Self.group.next())
        let fast = hub.subscribe(job: "j", on: Self.group.next())
        // The fast one reads each event as it comes; the slow one never reads.
        var seen: [Int] = []
        for seq in 1...40 {
            hub.publish(event("j", seq))
            while seen.count < seq, case .events(let frames) = await fast.queue.next() { seen += frames.map(\.seq) }
        }
        #expect(seen == Array(1...40))
        // The slow one never read: past its backlog its queue closed instead of growing.
        var outcome: [String] = []
        for _ in 0..<2 {
            switch await slow.queue.next() {
            case .events(let frames): outcome.append("events \(frames.count)")
            case .closed: outcome.append("closed")
            case .keepalive: outcome.append("keepalive")
            }
        }
        #expect(outcome == ["closed", "closed"])
    }

    @Test func keepaliveWakesWaitingClients() async throws {
        let hub = EventHub(backlog: 10)
        let sub = hub.subscribe(job: "j", on: Self.group.next())
        let ticker = Task { await hub.runKeepalive(interval: .milliseconds(20)) }
        defer { ticker.cancel() }
        guard case .keepalive = await sub.queue.next() else { Issue.record("expected a keepalive"); return }
    }
}
