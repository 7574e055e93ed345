import Foundation
import HTTPTypes
import KilnJobStore
import KilnJobs
import KilnTestSupport
import NIOCore
import NIOEmbedded
import NIOHTTPTypes
import Testing

@testable import KilnCoordination
@testable import KilnGateway

/// The relay of events another gateway ingests, without a bus: a store, a hub and a stream on a
/// testing channel.
@Suite struct PeerEventRelayTests {
    /// A relay on a thread-safe testing channel: the relay under test is an actor, so the hub
    /// publishes from the actor's thread, not the test's (an `EmbeddedChannel` may be used only from
    /// the thread that made it; issue #27 found this test doing otherwise).
    final class Stream: Sendable {
        let channel = NIOAsyncTestingChannel()
        let relay = SSERelay()

        init() async throws {
            try await channel.pipeline.addHandler(relay).get()
            try await channel.connect(to: SocketAddress(ipAddress: "127.0.0.1", port: 1)).get()
            let relay = self.relay
            _ = try await channel.testingEventLoop.executeInContext { relay.beginForTesting(backlog: 100) }
            try await channel.testingEventLoop.executeInContext { relay.goLiveForTesting(after: 0) }
        }

        /// Runs what the hub handed to the channel's loop, then returns the body written so far.
        func body() async throws -> String {
            await channel.testingEventLoop.run()
            var out = ""
            while let part = try await channel.readOutbound(as: HTTPResponsePart.self) {
                if case .body(let b) = part { out += String(buffer: b) }
            }
            return out
        }
    }

    func stored(_ seq: Int, _ type: String = "log") -> StoredEvent {
        StoredEvent(jobID: "jpeer", seq: seq, type: type, data: #"{"seq":\#(seq)}"#)
    }

    func farm() async throws -> (SQLiteJobStore, EventHub, Stream, TemporaryDirectory) {
        let dir = try TemporaryDirectory()
        let store = try SQLiteJobStore(path: dir.file("kiln.sqlite"))
        _ = try await store.enqueue(Job(id: "jpeer", nonce: "c0ffee00", request: "{}", position: 0, queuedAt: Date(), sourceDigest: nil))
        let hub = EventHub()
        let stream = try await Stream()
        _ = hub.subscribe(job: "jpeer", relay: stream.relay, on: stream.channel.eventLoop)
        return (store, hub, stream, dir)
    }

    /// Events stored by another gateway whose notices never arrived (it had not seen this gateway
    /// heartbeat yet, or a bus member died with them in flight) still reach the stream: the
    /// once-a-second catch-up reads them, and a stream never waits for a notice that will not come.
    @Test func eventsWhoseNoticesWereLostArriveByCatchUp() async throws {
        let (store, hub, stream, dir) = try await farm()
        let relay = PeerEventRelay(hub: hub, store: store)
        for seq in 1...3 { #expect(try await store.appendEvent(stored(seq))) }
        #expect(try await stream.body() == "", "no notice, no catch-up: nothing yet")
        await relay.catchUp(jobs: ["jpeer"], quietFor: .zero)
        #expect(try await stream.body() == (1...3).map { String(buffer: SSEFrame(stored($0)).bytes) }.joined())
        // The terminal event, again without a notice.
        #expect(try await store.appendEvent(stored(4, "done")))
        await relay.catchUp(jobs: ["jpeer"], quietFor: .zero)
        #expect(try await stream.body() == String(buffer: SSEFrame(stored(4, "done")).bytes))
        withExtendedLifetime(dir) {}
    }

    /// A catch-up right after a read does not read again (one read per job per `quietFor`), and a
    /// forged notice with a huge seq neither skips events nor stops later ones.
    @Test func forgedSeqsNeitherSkipNorStall() async throws {
        let (store, hub, stream, dir) = try await farm()
        let relay = PeerEventRelay(hub: hub, store: store)
        #expect(try await store.appendEvent(stored(1)))
        await relay.noticed(job: "jpeer", seq: Int.max)
        #expect(try await stream.body() == String(buffer: SSEFrame(stored(1)).bytes))
        #expect(try await store.appendEvent(stored(2)))
        await relay.catchUp(jobs: ["jpeer"], quietFor: .seconds(60))
        #expect(try await stream.body() == "", "read a moment ago: not again before quietFor")
        await relay.noticed(job: "jpeer", seq: 2)
        #expect(try await stream.body() == String(buffer: SSEFrame(stored(2)).bytes))
        withExtendedLifetime(dir) {}
    }
}
