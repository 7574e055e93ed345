import Foundation
import KilnTestSupport
import Testing

@testable import KilnGateway

/// The relay of events another gateway ingests, without a bus: a store, a hub and a stream on an
/// embedded channel.
@Suite struct PeerEventRelayTests {
    func stored(_ seq: Int, _ type: String = "log") -> StoredEvent {
        StoredEvent(jobID: "jpeer", seq: seq, type: type, data: #"{"seq":\#(seq)}"#)
    }

    func farm() async throws -> (SQLiteJobStore, EventHub, EventHubTests.Stream, TemporaryDirectory) {
        let dir = try TemporaryDirectory()
        let store = try SQLiteJobStore(path: dir.file("kiln.sqlite"))
        _ = try await store.enqueue(JobStoreContractTests.job("jpeer"))
        let hub = EventHub()
        let stream = try EventHubTests.Stream()
        _ = hub.subscribe(job: "jpeer", relay: stream.relay, on: stream.channel.eventLoop)
        stream.relay.goLiveForTesting(after: 0)
        return (store, hub, stream, dir)
    }

    /// Events stored by another gateway whose notices never arrived (it had not seen this gateway
    /// heartbeat yet, or a bus member died with them in flight) still reach the stream: the
    /// once-a-second catch-up reads them, and a stream never waits for a notice that will not come.
    @Test func eventsWhoseNoticesWereLostArriveByCatchUp() async throws {
        let (store, hub, stream, dir) = try await farm()
        let relay = PeerEventRelay(hub: hub, store: store)
        for seq in 1...3 { #expect(try await store.appendEvent(stored(seq))) }
        #expect(try stream.body() == "", "no notice, no catch-up: nothing yet")
        await relay.catchUp(jobs: ["jpeer"], quietFor: .zero)
        #expect(try stream.body() == (1...3).map { String(buffer: SSEFrame(stored($0)).bytes) }.joined())
        // The terminal event, again without a notice.
        #expect(try await store.appendEvent(stored(4, "done")))
        await relay.catchUp(jobs: ["jpeer"], quietFor: .zero)
        #expect(try stream.body() == String(buffer: SSEFrame(stored(4, "done")).bytes))
        withExtendedLifetime(dir) {}
    }

    /// A catch-up right after a read does not read again (one read per job per `quietFor`), and a
    /// forged notice with a huge seq neither skips events nor stops later ones.
    @Test func forgedSeqsNeitherSkipNorStall() async throws {
        let (store, hub, stream, dir) = try await farm()
        let relay = PeerEventRelay(hub: hub, store: store)
        #expect(try await store.appendEvent(stored(1)))
        await relay.noticed(job: "jpeer", seq: Int.max)
        #expect(try stream.body() == String(buffer: SSEFrame(stored(1)).bytes))
        #expect(try await store.appendEvent(stored(2)))
        await relay.catchUp(jobs: ["jpeer"], quietFor: .seconds(60))
        #expect(try stream.body() == "", "read a moment ago: not again before quietFor")
        await relay.noticed(job: "jpeer", seq: 2)
        #expect(try stream.body() == String(buffer: SSEFrame(stored(2)).bytes))
        withExtendedLifetime(dir) {}
    }
}
