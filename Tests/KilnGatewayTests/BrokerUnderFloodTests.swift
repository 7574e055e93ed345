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
                // A handshake deadline long enough that all 45 flood connections are open at once however
                // loaded the machine is, short enough to see them cut off below.
                "--token", "s3cret", "--handshake-timeout", "20", "--max-connections-per-address", "40",
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
        // 45 connections that never authenticate (some trickling bytes): 36 fit beside the gateway, the
        // fetch service, the worker and the subscriber; the broker refuses the rest (counted). Opened
        // first, checked after: the refusals do not depend on how fast each reply is read.
        var flood: [RawBusConnection] = []
        for i in 0..<45 {
            let conn = try RawBusConnection(port: c.broker.port)
            // A refused connection may be closed already: its trickle has nowhere to go, which is fine.
            if i % 3 == 0 { try? await conn.send([0, 0, 0]) }
            flood.append(conn)
        }
        let refusals = #"kiln_broker_limit_refusals_total{limit="connections_per_address"} "#
        let refused = await eventually(within: .seconds(30)) { () async -> Double? in
            let body = (try? await HTTPGet.get(port: c.broker.monitorPort, path: "/metrics").body) ?? ""
            let value = body.split(separator: "\n").first { $0.hasPrefix(refusals) }.flatMap { Double($0.dropFirst(refusals.count)) } ?? 0
            return value >= 5 ? value : nil
        }
        #expect(refused != nil, "connections past the per-address limit are refused")
        // Meanwhile a real build goes through.
        let id = try await c.submit(Fixtures.helloCrate())
        let done = try await c.waitForStatus(id, ["ready", "error", "cancelled"], timeout: .seconds(120))
        #expect(done["status"] as? String == "ready", "\(done)")
        // The half-open connections were cut off at the handshake deadline.
        var closed = 0
        for conn in flood where await (try? conn.waitForClose(timeout: 60)) == true { closed += 1 }
        #expect(closed == flood.count)
        let metrics = try await HTTPGet.get(port: c.broker.monitorPort, path: "/metrics").body
        #expect(metrics.contains("kiln_broker_limit_refusals_total{limit=\"handshake\"}"))
    }
}
