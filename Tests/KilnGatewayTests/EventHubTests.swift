import HTTPTypes
import KilnGateway
import KilnJobs
import NIOCore
import NIOEmbedded
import NIOHTTPTypes
import Testing

/// The live half of SSE without sockets: the hub's fan-out into relays on embedded channels.
@Suite struct EventHubTests {
    func event(_ job: String, _ seq: Int, _ type: String = "log") -> StoredEvent {
        StoredEvent(jobID: job, seq: seq, type: type, data: #"{"seq":\#(seq)}"#)
    }

    /// A relay in a channel of its own; what it writes comes out as body parts.
    final class Stream {
        let channel: EmbeddedChannel
        let relay = SSERelay()
        var finished: EventLoopFuture<Void>!

        init(backlog: Int = 100) throws {
            channel = EmbeddedChannel()
            try channel.pipeline.syncOperations.addHandler(relay)
            try channel.connect(to: SocketAddress(ipAddress: "127.0.0.1", port: 1)).wait()
            finished = relay.beginForTesting(backlog: backlog)
        }

        /// Runs what the hub handed to this channel's loop, then returns the body written so far.
        func body() throws -> String {
            channel.embeddedEventLoop.run()
            var out = ""
            while let part = try channel.readOutbound(as: HTTPResponsePart.self) {
                if case .body(let b) = part { out += String(buffer: b) }
            }
            return out
        }
    }

    @Test func framesAreEncodedOnceAsSSE() {
        let frame = SSEFrame(event("j1", 7, "phase"))
        #expect(String(buffer: frame.bytes) == "id: 7\nevent: phase\ndata: {\"seq\":7}\n\n")
        #expect(!frame.isTerminal)
        #expect(SSEFrame(event("j1", 8, "done")).isTerminal)
    }

    @Test func bufferedWhileReplayingThenLiveInOrderEachOnce() throws {
        let hub = EventHub()
        let s = try Stream()
        let id = hub.subscribe(job: "j1", relay: s.relay, on: s.channel.eventLoop)
        #expect(hub.clientCount == 1)
        // Published while the route replays stored events 1...2: held back.
        hub.publish(event("j1", 2))
        hub.publish(event("j1", 3))
        hub.publish(event("j2", 1))  // another job: not this stream's
        #expect(try s.body() == "")
        s.relay.goLiveForTesting(after: 2)
        #expect(try s.body() == String(buffer: SSEFrame(event("j1", 3)).bytes))
        hub.publish(event("j1", 3))  // a duplicate: dropped
        hub.publish(event("j1", 4, "done"))
        #expect(try s.body() == String(buffer: SSEFrame(event("j1", 4, "done")).bytes))
        // The terminal event ends the stream; nothing after it.
        #expect(throws: Never.self) { try s.finished.wait() }
        hub.publish(event("j1", 5))
        #expect(try s.body() == "")
        hub.unsubscribe(job: "j1", id: id)
        #expect(hub.clientCount == 0)
    }

    @Test func everyStreamOfTheJobGetsEveryEvent() throws {
        let hub = EventHub()
        let streams = try (0..<5).map { _ in try Stream() }
        for s in streams {
            _ = hub.subscribe(job: "j", relay: s.relay, on: s.channel.eventLoop)
            s.relay.goLiveForTesting(after: 0)
        }
        for seq in 1...20 { hub.publish(event("j", seq)) }
        let expected = (1...20).map { String(buffer: SSEFrame(event("j", $0)).bytes) }.joined()
        for s in streams { #expect(try s.body() == expected) }
    }

    @Test func aStreamThatFallsBehindIsCutOff() throws {
        let hub = EventHub()
        let slow = try Stream(backlog: 10)
        _ = hub.subscribe(job: "j", relay: slow.relay, on: slow.channel.eventLoop)
        // Still replaying, and the live events pile up past the backlog: cut off, not buffered on.
        for seq in 1...11 { hub.publish(event("j", seq)) }
        _ = try slow.body()
        #expect(throws: Never.self) { try slow.finished.wait() }
        #expect(!slow.channel.isActive)
    }

    @Test func aLiveStreamWhoseSocketStaysFullIsCutOff() throws {
        let hub = EventHub()
        let s = try Stream(backlog: 5)
        _ = hub.subscribe(job: "j", relay: s.relay, on: s.channel.eventLoop)
        s.relay.goLiveForTesting(after: 0)
        s.channel.isWritable = false  // the client stopped reading
        for seq in 1...5 { hub.publish(event("j", seq)) }
        _ = try s.body()
        #expect(s.channel.isActive, "within the backlog it is still served")
        for seq in 6...7 { hub.publish(event("j", seq)) }
        _ = try s.body()
        #expect(!s.channel.isActive)
        #expect(throws: Never.self) { try s.finished.wait() }
    }

    @Test func keepaliveReachesLiveStreamsOnly() throws {
        let hub = EventHub()
        let live = try Stream()
        let replaying = try Stream()
        _ = hub.subscribe(job: "j", relay: live.relay, on: live.channel.eventLoop)
        _ = hub.subscribe(job: "j", relay: replaying.relay, on: replaying.channel.eventLoop)
        live.relay.goLiveForTesting(after: 0)
        hub.sendKeepalives()
        #expect(try live.body() == ": keepalive\n\n")
        #expect(try replaying.body() == "", "a stream still replaying stored events gets no comment in between")
    }
}
