import Foundation
import KilnBus
import KilnBusClient
import KilnTestSupport
import Testing

/// Tests that need the real kiln-broker executable: restart and SIGTERM drain.
@Suite struct BrokerProcessTests {
    @Test func clientReconnectsAndResubscribesAcrossRestart() async throws {
        var broker = try await BrokerProcess()
        let port = broker.port  // the restarted broker comes back on the same port
        let sub = try await client(port) {
            $0.reconnectInitialDelay = .milliseconds(20)
            $0.reconnectMaxDelay = .milliseconds(200)
        }
        let pub = try await client(port) {
            $0.reconnectInitialDelay = .milliseconds(20)
            $0.reconnectMaxDelay = .milliseconds(200)
        }
        let events = try sub.subscribe("job.*.events")
        let spent = try sub.subscribe("once.a", max: 1)
        let unspent = try sub.subscribe("once.b", max: 2)
        try await sub.flush()
        try await pub.publish("once.a", string: "used")
        try await pub.publish("once.b", string: "first")
        try await pub.flush()
        #expect(await collect(spent, count: 1).count == 1)

        broker.process.signal(SIGKILL)
        _ = try await broker.process.waitForExit()
        // Both clients must notice the loss before the new broker is up; otherwise `isConnected`
        // below could still describe the dead connection.
        #expect(await eventually(every: .milliseconds(10)) { !sub.isConnected && !pub.isConnected })
        broker = try await BrokerProcess(port: port)
        defer { broker.stop() }

        // Wait for both clients to be back.
        #expect(await eventually { sub.isConnected && pub.isConnected })
        try await sub.flush()
        try await pub.publish("job.7.events", string: "after restart")
        try await pub.publish("once.b", string: "second")
        try await pub.flush()
        #expect(await collect(events, count: 1).map(\.payloadString) == ["after restart"])
        #expect(await collect(unspent, count: 2).map(\.payloadString) == ["first", "second"])
        // The spent one-shot was not renewed.
        await #expect(throws: BusClientError.noResponders(subject: "once.a")) {
            _ = try await pub.request("once.a", payload: [UInt8]())
        }
        await sub.close()
        await pub.close()
    }

    /// A broker that stops answering (SIGSTOP: the TCP connection stays up, nothing is read) must not
    /// hang a flush or a request past its timeout. Before the deadlines moved into the client's state
    /// machine, `flush(timeout:)` ignored its timeout and waited for ever.
    @Test func aSilentBrokerTimesOutFlushesAndRequests() async throws {
        let broker = try await BrokerProcess()
        defer { broker.stop() }
        let bus = try await client(broker.port)
        let responder = try await client(broker.port)
        let service = try responder.subscribe("svc")
        try await responder.flush()
        broker.process.signal(SIGSTOP)
        defer { broker.process.signal(SIGCONT) }
        // kill() only queues the signal: wait until the kernel reports the broker stopped ("T").
        let stat = "/proc/\(broker.process.pid)/stat"
        #expect(await eventually { (try? String(contentsOfFile: stat, encoding: .utf8))?.split(separator: ")").last?.split(separator: " ").first == "T" })
        await #expect(throws: BusClientError.flushTimeout) { try await bus.flush(timeout: .milliseconds(300)) }
        await #expect(throws: BusClientError.timeout(subject: "svc")) {
            _ = try await bus.request("svc", payload: [UInt8](), timeout: .milliseconds(300))
        }
        // Once the broker is back, the late pong of the timed-out flush is not mistaken for the next one's.
        broker.process.signal(SIGCONT)
        try await bus.flush(timeout: .seconds(10))
        try await bus.flush(timeout: .seconds(10))
        try await service.unsubscribe()
        await bus.close()
        await responder.close()
    }

    @Test func sigtermDrainsConnections() async throws {
        let broker = try await BrokerProcess()
        let conn = try RawBusConnection(port: broker.port)
        try await conn.handshake()
        await #expect(try conn.roundTrip())
        broker.process.signal(SIGTERM)
        let err = try await conn.read(op: .err, timeout: 10)?.header
        #expect(err?.code == 503)
        #expect(err?.message == "broker is shutting down")
        await #expect(try conn.waitForClose())
        #expect(try await broker.process.waitForExit(timeout: .seconds(10)) == 0)
    }

    @Test func brokerRefusesBadConfig() async throws {
        let dir = try TemporaryDirectory()
        try "{\"users\":[{\"user\":\"x\",\"password\":\"y\",\"permissions\":{\"publish\":{\"allow\":[\"a..b\"]}}}]}"
            .write(toFile: dir.file("bad.json"), atomically: true, encoding: .utf8)
        let p = try await LaunchedProcess(BuiltProducts.path("kiln-broker"), ["--port", "0", "--monitor-port=-1", "--config", dir.file("bad.json")])
        #expect(try await p.waitForExit() != 0)
        #expect(p.output.joined().contains("empty token"))
    }
}
