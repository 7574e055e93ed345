import Foundation
import KilnBusClient
import KilnMessages
import KilnTestSupport
import Logging
import NIOHTTP1
import Testing

@testable import KilnCoordination
@testable import KilnGateway

/// Bad input that needs a real gateway process: event streams, and bus messages.
@Suite(.serialized) struct GatewayBadInputTests {

    /// What needs a real socket: event streams (the SSE relay lives in the channel pipeline). The rest
    /// of the HTTP validation is in-process, in `GatewayValidationTests`.
    @Test func eventStreamsOfUnknownAndWaitingJobs() async throws {
        let c = try await TestCluster()
        defer { c.stop() }
        let unknown = try await c.http(.GET, "/build/nope/events")
        #expect(unknown.status == 404 && unknown.body.contains("no job with id 'nope'"), "\(unknown.body)")
        // No workers: the job waits, and so does its stream.
        let id = try await c.submit(Fixtures.helloCrate())
        let sse = try await SSEClient.read(port: c.gateway.port, path: "/build/\(id)/events", lastEventID: nil, timeout: 0.5)
        #expect(sse.status == 200)
        #expect(!sse.ended, "a waiting job's stream stays open")
        let badID = try await HTTPGet.get(port: c.gateway.port, path: "/build/\(id)/events?last_event_id=x")
        #expect(badID.status == 400)
    }
}

/// #11 item 5: numbers from the bus are range-checked before any arithmetic.
@Suite struct GatewayBusNumbersTests {
    @Test(arguments: [
        (0, 1, Int64(10), 10, Int64(0)), (0, 2, Int64(15), 10, Int64(0)), (1, 2, Int64(15), 5, Int64(10)),
    ])
    func realChunksHaveOffsets(index: Int, count: Int, size: Int64, bytes: Int, offset: Int64) {
        #expect(ChunkBounds.resultChunkOffset(index: index, count: count, size: size, bytes: bytes, maxSize: 1 << 30) == offset)
    }

    @Test(arguments: [
        (Int.max - 1, Int.max, Int64(1 << 20), 1 << 20),  // index × bytes overflows
        (5, 2, Int64(100), 10),  // index past count
        (0, 2, Int64.max, 10),  // size over the limit
        (1, 2, Int64(5), 10),  // last chunk longer than the file
        (0, 1, Int64(-1), 1),  // negative size
        (3, 5, Int64(20), 10),  // ends past the file
    ])
    func impossibleChunksAreRefused(index: Int, count: Int, size: Int64, bytes: Int) {
        #expect(ChunkBounds.resultChunkOffset(index: index, count: count, size: size, bytes: bytes, maxSize: 1 << 30) == nil)
    }

    @Test func sourceChunkOffsets() {
        #expect(ChunkBounds.sourceChunkOffset(index: 2, chunkSize: 10, size: 25) == 20)
        #expect(ChunkBounds.sourceChunkOffset(index: 3, chunkSize: 10, size: 25) == nil)
        #expect(ChunkBounds.sourceChunkOffset(index: Int.max, chunkSize: 1 << 20, size: 25) == nil)
        #expect(ChunkBounds.sourceChunkOffset(index: -1, chunkSize: 10, size: 25) == nil)
    }

    /// Before the fix, a source request with `index` = Int64.max made the gateway trap and exit.
    @Test func overflowingHeadersFromTheBusDoNotStopTheGateway() async throws {
        let c = try await TestCluster(gatewayArgs: ["--inline-source-limit", "16"])
        defer { c.stop() }
        // The attacker is the worker that accepted the job: its source requests are answered.
        var bus = BusClient.Configuration(host: "127.0.0.1", port: c.broker.port)
        bus.inboxNamespace = "nobody"
        let client = try await BusClient.connect(bus, logger: Logger(label: "attacker"))
        let requests = try client.subscribe(Subjects.buildRequest, queue: Subjects.workersQueue, max: 1)
        try await client.flush()
        let id = try await c.submit(Fixtures.helloCrate())  // stored as an upload (above the inline limit)
        let offer = try #require(await requests.first(within: .seconds(60)), "no build request reached the attacker")
        try await client.publish(try #require(offer.reply), payload: Array(try JSONEncoder().encode(DispatchReply.accept(workerID: "nobody"))))
        _ = try await c.waitForStatus(id, ["building"], timeout: .seconds(60))
        for index in [String(Int64.max), "-1", "99999999999999999999", "1000"] {
            let reply = try await client.request(Subjects.source(id, worker: "nobody"), payload: [UInt8](), headers: ["index": index], timeout: .seconds(5))
            #expect(reply.status != "200", "index \(index)")
        }
        let good = try await client.request(Subjects.source(id, worker: "nobody"), payload: [UInt8](), headers: ["index": "0"], timeout: .seconds(5))
        #expect(good.status == "200" && !good.payloadBytes.isEmpty)
        let chunk = try await client.request(
            Subjects.result(id, worker: "nobody"), payload: [UInt8](repeating: 1, count: 64),
            headers: [
                ResultChunkHeaders.index: String(Int64.max - 1), ResultChunkHeaders.count: String(Int64.max), ResultChunkHeaders.sha256: "00",
                ResultChunkHeaders.size: String(Int64.max), ResultChunkHeaders.workerID: "nobody",
            ], timeout: .seconds(5))
        #expect(!chunk.payloadBytes.isEmpty)
        // Still serving, and it counted what it refused.
        #expect(try await c.http(.GET, "/build/\(id)").status == 200)
        let metrics = try await HTTPGet.get(port: c.gateway.port, path: "/metrics")
        #expect(metrics.body.contains("kiln_gateway_bus_messages_rejected_total{reason=\"bad_chunk\"} 3"), "\(metrics.body)")
        await client.close()
    }
}
