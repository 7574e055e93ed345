import Foundation
import KilnBus
import KilnTestSupport
import Testing

/// #11 item 4: a broker that cannot be starved by slow handshakes, big pre-auth frames, connection or
/// subscription floods; each limit answers with an `err` frame, is counted, and leaves normal clients working.
@Suite struct BrokerLimitsTests {
    func metric(_ broker: BrokerProcess, _ limit: String) async throws -> Int {
        let body = try await HTTPGet.get(port: broker.monitorPort, path: "/metrics").body
        let prefix = "kiln_broker_limit_refusals_total{limit=\"\(limit)\"} "
        return body.split(separator: "\n").first { $0.hasPrefix(prefix) }.flatMap { Int($0.dropFirst(prefix.count)) } ?? -1
    }

    @Test func slowHandshakesAreCutOff() async throws {
        let broker = try await BrokerProcess(arguments: ["--token", "s3cret", "--handshake-timeout", "0.5", "--pre-connect-max-frame", "2048"])
        defer { broker.stop() }
        // Half-open: connects, reads INFO, never sends connect.
        let idle = try RawBusConnection(port: broker.port)
        _ = try await idle.read(op: .info)
        // Slow loris: trickles a frame header byte by byte, never completing it.
        let loris = try RawBusConnection(port: broker.port)
        _ = try await loris.read(op: .info)
        try await loris.send([0, 0])
        let err = try await #require(try idle.read(op: .err, timeout: 5))
        #expect(err.header.code == 408)
        await #expect(try idle.waitForClose(timeout: 5))
        await #expect(try loris.waitForClose(timeout: 5))
        #expect(try await metric(broker, "handshake") >= 2)
    }

    /// A broker whose handshake deadline is generous, so that what is tested is the frame limit and
    /// not how fast a loaded machine gets the frame out.
    @Test func bigPreAuthFramesAreRefusedAndAuthenticatedClientsGetFullFrames() async throws {
        let broker = try await BrokerProcess(arguments: ["--token", "s3cret", "--handshake-timeout", "60", "--pre-connect-max-frame", "2048"])
        defer { broker.stop() }
        // A frame larger than the pre-auth limit is refused before any auth.
        let big = try RawBusConnection(port: broker.port)
        _ = try await big.read(op: .info)
        try await big.send(rawHeader: "{\"op\":\"connect\",\"token\":\"\(String(repeating: "x", count: 4096))\"}")
        let tooBig = try await #require(try big.read(op: .err))
        #expect(tooBig.header.message?.contains("2048") == true, "\(tooBig.header)")
        await #expect(try big.waitForClose())
        // An authenticated client still gets full-size frames.
        let good = try RawBusConnection(port: broker.port)
        _ = try await good.handshake(token: "s3cret")
        try await good.send(BusHeader.pub("big.payload"), payload: [UInt8](repeating: 7, count: 100_000))
        await #expect(try good.roundTrip())
        await #expect(try metric(broker, "pre_connect_frame") == 1)
    }

    /// #29 item 3: an open broker (no auth) holds a connection that has not sent `connect` to the same
    /// small frames — before, 100 half-sent 8 MiB frames held 408 MiB of it.
    @Test func anOpenBrokerLimitsFramesBeforeConnectToo() async throws {
        let broker = try await BrokerProcess(arguments: ["--pre-connect-max-frame", "2048"])
        defer { broker.stop() }
        let early = try RawBusConnection(port: broker.port)
        _ = try await early.read(op: .info)
        try await early.send(BusHeader.pub("big.payload"), payload: [UInt8](repeating: 7, count: 100_000))
        let refused = try await #require(try early.read(op: .err))
        #expect(refused.header.code == 413 && refused.header.message?.contains("2048") == true, "\(refused.header)")
        await #expect(try early.waitForClose())
        await #expect(try metric(broker, "pre_connect_frame") == 1)
        // After `connect` (no credentials needed here), full-size frames.
        let good = try RawBusConnection(port: broker.port)
        _ = try await good.handshake()
        try await good.send(BusHeader.pub("big.payload"), payload: [UInt8](repeating: 7, count: 100_000))
        await #expect(try good.roundTrip())
        // Small frames before `connect` still work on an open broker.
        let terse = try RawBusConnection(port: broker.port)
        _ = try await terse.read(op: .info)
        await #expect(try terse.roundTrip())
    }

    @Test func connectionFloodsStopAtTheLimitAndNormalClientsCarryOn() async throws {
        let broker = try await BrokerProcess(arguments: ["--max-connections-per-address", "8"])
        defer { broker.stop() }
        var held: [RawBusConnection] = []
        for _ in 0..<8 {
            let c = try RawBusConnection(port: broker.port)
            _ = try await c.read(op: .info)
            held.append(c)
        }
        let refused = try RawBusConnection(port: broker.port)
        let err = try await #require(try refused.read(op: .err))
        #expect(err.header.code == 429 && err.header.message?.contains("too many connections") == true)
        await #expect(try refused.waitForClose())
        await #expect(try metric(broker, "connections_per_address") == 1)
        // Close one: a new client gets in and works.
        held.removeLast().close()
        // Until the broker has seen the close, a new connection may still be refused (err, then EOF).
        let admitted = try await eventually(within: .seconds(30), every: .milliseconds(50)) {
            let c = try RawBusConnection(port: broker.port)
            return await (try? c.handshake()) != nil ? try c.roundTrip() : false
        }
        #expect(admitted)
    }

    @Test func subscriptionFloodsAreRefusedPerConnection() async throws {
        let broker = try await BrokerProcess(arguments: ["--max-subscriptions", "50"])
        defer { broker.stop() }
        let c = try RawBusConnection(port: broker.port)
        _ = try await c.handshake()
        for i in 0..<50 { try await c.send(BusHeader.sub("flood.\(i)", sid: "s\(i)")) }
        try await c.send(BusHeader.sub("flood.extra", sid: "extra"))
        let err = try await #require(try c.read(op: .err))
        #expect(err.header.code == 429 && err.header.message?.contains("at most 50") == true)
        // Not fatal: the connection still works, and unsubscribing makes room.
        await #expect(try c.roundTrip())
        var unsub = BusHeader(op: .unsub)
        unsub.sid = "s0"
        try await c.send(unsub)
        try await c.send(BusHeader.sub("flood.extra", sid: "extra"))
        await #expect(try c.roundTrip())
        await #expect(try metric(broker, "subscriptions") == 1)
    }
}

/// #11 item 1: who published is the broker's word, never the client's.
@Suite struct BrokerSenderStampTests {
    @Test func theBrokerStampsAuthenticatedUsersAndStripsClaimsFromOthers() async throws {
        let dir = try TemporaryDirectory()
        try #"{"users": [{"user": "alice", "password": "pa", "permissions": {}}, {"user": "bob", "password": "pb", "permissions": {}}]}"#
            .write(toFile: dir.file("users.json"), atomically: true, encoding: .utf8)
        let broker = try await BrokerProcess(arguments: ["--users", dir.file("users.json")])
        defer { broker.stop() }
        let bob = try RawBusConnection(port: broker.port)
        _ = try await bob.handshake(user: "bob", password: "pb")
        try await bob.send(BusHeader.sub("t", sid: "1"))
        await #expect(try bob.roundTrip())
        let alice = try RawBusConnection(port: broker.port)
        _ = try await alice.handshake(user: "alice", password: "pa")
        try await alice.send(BusHeader.pub("t", headers: [BusHeader.senderHeader: "bob", "x": "1"]), payload: [1])
        let msg = try await #require(try bob.read(op: .msg))
        #expect(msg.header.headers?[BusHeader.senderHeader] == "alice")
        #expect(msg.header.headers?[BusHeader.senderConnectionHeader].flatMap(Int.init) != nil)
        #expect(msg.header.headers?["x"] == "1")

        let open = try await BrokerProcess()
        defer { open.stop() }
        let sub = try RawBusConnection(port: open.port)
        _ = try await sub.handshake(user: "claimed")
        try await sub.send(BusHeader.sub("t", sid: "1"))
        await #expect(try sub.roundTrip())
        let pub = try RawBusConnection(port: open.port)
        _ = try await pub.handshake(user: "claimed")
        try await pub.send(BusHeader.pub("t", headers: [BusHeader.senderHeader: "gateway", BusHeader.senderConnectionHeader: "1"]), payload: [1])
        let unstamped = try await #require(try sub.read(op: .msg))
        #expect(unstamped.header.headers?[BusHeader.senderHeader] == nil, "an unauthenticated claim is removed")
        #expect(unstamped.header.headers?[BusHeader.senderConnectionHeader] == nil)
    }
}
