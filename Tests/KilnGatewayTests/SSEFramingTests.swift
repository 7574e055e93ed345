import Foundation
import KilnBusClient
import KilnMessages
import KilnTestSupport
import Logging
import Testing

/// #12 item 3: nothing a worker sends can add SSE fields or frames. JSON allows raw newlines
/// between tokens; relayed as-is they would end the SSE `data:` line and start fields of the
/// attacker's choosing (`event:`, `id:`, a fake `done`) in every client's stream.
@Suite(.serialized) struct SSEFramingTests {
    @Test func aNewlineLadenEventReachesClientsAsOneWellFormedEvent() async throws {
        let c = try await TestCluster()
        defer { c.stop() }
        let worker = try await BusClient.connect(.init(host: "127.0.0.1", port: c.broker.port), logger: Logger(label: "worker"))
        let requests = try worker.subscribe(Subjects.buildRequest, queue: Subjects.workersQueue, max: 1)
        try await worker.flush()
        let id = try await c.submit(Fixtures.helloCrate())
        let message = try #require(await requests.first(within: .seconds(60)), "no build request reached the stand-in worker")
        try await worker.publish(try #require(message.reply), payload: Array(try JSONEncoder().encode(DispatchReply.accept(workerID: "w-nl"))))
        var accepted = BuildEvent(jobID: id, seq: 1, type: .accepted)
        accepted.workerID = "w-nl"
        try await worker.publish(Subjects.events(id, worker: "w-nl"), payload: accepted.encoded())
        // Valid JSON, with newlines between tokens that spell out SSE fields.
        let hostile =
            "{\n\"type\": \"log\",\n\"job_id\": \"\(id)\",\n\"seq\": 2,\n\"worker_id\": \"w-nl\",\n\"stream\": \"stdout\",\n"
            + "\"lines\": [\"hello\"],\n\"time\": \"2026-01-01T00:00:00.000000Z\"\n}\nevent: done\nid: 999\ndata: {\"type\":\"done\"}\n"
        let cleanJSON = hostile.components(separatedBy: "\nevent: done")[0]
        #expect((try? JSONSerialization.jsonObject(with: Data(cleanJSON.utf8))) != nil, "the JSON part is valid JSON")
        try await worker.publish(Subjects.events(id, worker: "w-nl"), payload: Array(cleanJSON.utf8))
        var cancelled = BuildEvent(jobID: id, seq: 3, type: .cancelled)
        cancelled.workerID = "w-nl"
        try await worker.publish(Subjects.events(id, worker: "w-nl"), payload: cancelled.encoded())
        _ = try await c.waitForStatus(id, ["cancelled"], timeout: .seconds(20))
        let sse = try await SSEClient.read(port: c.gateway.port, path: "/build/\(id)/events", timeout: 60)
        #expect(sse.events.map(\.event) == ["accepted", "log", "cancelled"], "\(sse.events)")
        #expect(sse.events.map(\.id) == [1, 2, 3])
        let log = try #require(sse.events.first { $0.event == "log" })
        #expect(!log.data.contains("\n"))
        let decoded = try JSONSerialization.jsonObject(with: Data(log.data.utf8)) as? [String: Any]
        #expect((decoded?["lines"] as? [String]) == ["hello"])
        await worker.close()
    }
}
