import Foundation
import KilnBus
import KilnTestSupport
import Testing

/// #11 item 4, end to end: half-open and slow handshakes, a connection flood and a subscription flood
/// against the farm's broker stay within its limits while a real build goes through.
@Suite(.serialized) struct BrokerUnderFloodTests {
    @Test func aBuildCompletesWhileTheBrokerIsFlooded() async throws {
        let c = try await TestCluster(
            brokerArgs: [
                // A handshake deadline long enough that all 45 flood connections are open at once on a loaded
                // machine (each is read with an await), short enough to see them cut off below.
                "--token", "s3cret", "--handshake-timeout", "10", "--max-connections-per-address", "40",
                "--max-subscriptions", "100",
            ],
            brokerURLForGateway: { "kiln://s3cret@127.0.0.1:\($0)" })
        defer { c.stop() }
        try await c.startWorker(["--broker", "kiln://s3cret@127.0.0.1:\(c.broker.port)"])
        // A subscription flood on an authenticated connection stops at the limit.
        let subscriber = try RawBusConnection(port: c.broker.port)
        _ = try await subscriber.handshake(token: "s3cret")
        for i in 0..<101 { try await subscriber.send(BusHeader.sub("flood.\(i)", sid: "\(i)")) }
        let err = try await subscriber.read(op: .err, timeout: 5)
        #expect(err?.header.code == 429 && err?.header.message?.contains("at most 100") == true)
        // 45 connections that never authenticate (some trickling bytes): 37 fit beside the gateway, the worker and the subscriber.
        var flood: [RawBusConnection] = []
        var refused = 0
        for i in 0..<45 {
            let conn = try RawBusConnection(port: c.broker.port)
            if let first = try await conn.readFrame(timeout: 2), first.header.op == .err {
                #expect(first.header.code == 429)
                refused += 1
            } else if i % 3 == 0 {
                try await conn.send([0, 0, 0])
            }
            flood.append(conn)
        }
        #expect(refused >= 5, "connections past the per-address limit are refused")
        // Meanwhile a real build goes through.
        let id = try await c.submit(Fixtures.helloCrate())
        let done = try await c.waitForStatus(id, ["ready", "error", "cancelled"], timeout: .seconds(120))
        #expect(done["status"] as? String == "ready", "\(done)")
        // The half-open connections were cut off at the handshake deadline.
        var closed = 0
        for conn in flood where await (try? conn.waitForClose(timeout: 30)) == true { closed += 1 }
        #expect(closed == flood.count)
        let metrics = try await HTTPGet.get(port: c.broker.monitorPort, path: "/metrics").body
        #expect(metrics.contains("kiln_broker_limit_refusals_total{limit=\"handshake\"}"))
    }
}
