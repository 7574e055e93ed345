import Foundation
import KilnBroker
import KilnBus
import KilnBusClient
import KilnMonitor
import KilnTestSupport
import NIOCore
import Synchronization
import Testing

/// Bad input, auth, permissions, flow control and keepalive, over real TCP.
@Suite struct BrokerProtocolTests {
    /// Sends `raw` on a fresh connection and returns the error frame the broker answers with.
    func errorFor(port: Int, _ send: (RawBusConnection) async throws -> Void) async throws -> (BusHeader?, RawBusConnection) {
        let conn = try RawBusConnection(port: port)
        try await conn.handshake()
        try await send(conn)
        return (try await conn.read(op: .err)?.header, conn)
    }

    @Test(arguments: [
        ("not json at all", "header is not a JSON object"),
        ("[\"op\",\"pub\"]", "header is not a JSON object"),
        ("{\"op\":\"teleport\"}", "unknown op 'teleport'"),
        ("{\"op\":\"pub\"}", "'pub' needs a 'subject'"),
        ("{\"op\":\"sub\",\"subject\":\"a\"}", "'sub' needs a non-empty string 'sid'"),
        ("{\"op\":\"sub\",\"subject\":\"a\",\"sid\":1}", "field 'sid' must be a string"),
        ("{\"op\":\"sub\",\"subject\":\"a\",\"sid\":\"1\",\"max\":\"one\"}", "field 'max' must be an integer"),
        ("{\"op\":\"sub\",\"subject\":\"a\",\"sid\":\"1\",\"max\":-3}", "'max' must be a positive integer"),
        ("{\"op\":\"pub\",\"subject\":\"a..b\"}", "empty token"),
        ("{\"op\":\"pub\",\"subject\":\"a b\"}", "printable ASCII without spaces"),
        ("{\"op\":\"pub\",\"subject\":\"a.*\"}", "wildcards are not allowed"),
        ("{\"op\":\"pub\",\"subject\":\"a.>\"}", "wildcards are not allowed"),
        ("{\"op\":\"sub\",\"subject\":\"a.>.b\",\"sid\":\"1\"}", "'>' must be the last token"),
        ("{\"op\":\"unsub\",\"sid\":\"nope\"}", "unknown sid 'nope'"),
        ("{\"op\":\"msg\",\"subject\":\"a\",\"sid\":\"1\"}", "sent by the broker"),
        ("{\"op\":\"pub\",\"subject\":\"a\",\"headers\":\"x\"}", "must be an object of string values"),
    ])
    func malformedFrameGetsErrAndConnectionSurvives(raw: String, expected: String) async throws {
        try await withBroker { _, port in
            let other = try await client(port)
            let canary = try other.subscribe("canary")
            try await other.flush()
            let (err, conn) = try await errorFor(port: port) { try await $0.send(rawHeader: raw) }
            #expect(err?.code == 400)
            #expect(err?.message?.contains(expected) == true, "\(err?.message ?? "no err frame")")
            // Not fatal: the same connection still works.
            await #expect(try conn.roundTrip())
            // Other clients unaffected.
            try await other.publish("canary", string: "alive")
            #expect(await collect(canary, count: 1).count == 1)
            await other.close()
        }
    }

    @Test func oversizedLengthPrefixIsFatal() async throws {
        try await withBroker({ $0.maxFrame = 64 * 1024 }) { _, port in
            let conn = try RawBusConnection(port: port)
            try await conn.handshake()
            try await conn.send([0x7f, 0xff, 0xff, 0xf0, 0, 0, 0, 2, 0x7b, 0x7d])
            let err = try await conn.read(op: .err)?.header
            #expect(err?.code == 413)
            #expect(err?.message?.contains("exceeds max_frame 65536") == true)
            await #expect(try conn.waitForClose())
            // The broker is fine.
            let c = try await client(port)
            try await c.flush()
            await c.close()
        }
    }

    @Test func headerLongerThanFrameIsFatal() async throws {
        try await withBroker { _, port in
            let conn = try RawBusConnection(port: port)
            try await conn.handshake()
            try await conn.send([0, 0, 0, 8, 0, 0, 0, 100, 0x7b, 0x7d, 0x20, 0x20])
            let err = try await conn.read(op: .err)?.header
            #expect(err?.code == 400)
            #expect(err?.message?.contains("header length 100 exceeds") == true)
            await #expect(try conn.waitForClose())
        }
    }

    @Test func tokenAuth() async throws {
        try await withBroker({ $0.authenticator = Authenticator(.token("s3cret")) }) { _, port in
            // Anything before connect.
            let early = try RawBusConnection(port: port)
            let info = try await early.read(op: .info)?.header
            #expect(info?.authRequired == true)
            try await early.send(.pub("a"))
            let e1 = try await early.read(op: .err)?.header
            #expect(e1?.code == 401)
            #expect(e1?.message?.contains("first frame must be 'connect'") == true)
            await #expect(try early.waitForClose())
            // Wrong token.
            let wrong = try RawBusConnection(port: port)
            try await wrong.handshake(token: "nope")
            await #expect(try wrong.read(op: .err)?.header.code == 401)
            await #expect(try wrong.waitForClose())
            // Client library: wrong and right.
            await #expect(throws: BusClientError.self) {
                _ = try await client(port) {
                    $0.token = "bad"
                    $0.reconnect = false
                }
            }
            let ok = try await client(port) { $0.token = "s3cret" }
            try await ok.flush()
            await ok.close()
        }
    }

    @Test func userPermissions() async throws {
        let users: [Authenticator.User] = [
            .init(
                user: "gateway", password: "gw",
                permissions: .init(
                    publish: .init(allow: ["kiln.build.request", "kiln.*.control"]),
                    subscribe: .init(allow: ["kiln.>", "_INBOX.>"], deny: ["kiln.secret"]))),
            .init(
                user: "worker", password: "wk",
                permissions: .init(
                    publish: .init(allow: ["kiln.workers.ready"]),
                    subscribe: .init(allow: ["kiln.build.request"]), allowResponses: true)),
        ]
        try await withBroker({ $0.authenticator = Authenticator(.users(users)) }) { _, port in
            let gw = try RawBusConnection(port: port)
            try await gw.handshake(user: "gateway", password: "gw")
            try await gw.send(.pub("kiln.workers.ready"))
            let denied = try await gw.read(op: .err)?.header
            #expect(denied?.code == 403)
            #expect(denied?.message == "permission denied: publish to 'kiln.workers.ready'")
            await #expect(try gw.roundTrip(), "permission errors are not fatal")
            try await gw.send(.sub("other.x", sid: "9"))
            await #expect(try gw.read(op: .err)?.header.code == 403)
            try await gw.send(.sub("kiln.secret", sid: "9"))
            await #expect(try gw.read(op: .err)?.header.code == 403)
            // A wildcard subscription that is allowed still doesn't see the denied subject.
            try await gw.send(.sub("kiln.*", sid: "1"))
            await #expect(try gw.roundTrip())
            let admin = try await client(port) {
                $0.user = "gateway"
                $0.password = "gw"
            }
            _ = admin
            let wk = try RawBusConnection(port: port)
            try await wk.handshake(user: "worker", password: "wk")
            try await wk.send(.sub("kiln.build.request", sid: "w"))
            await #expect(try wk.roundTrip())
            // The gateway's request reaches the worker; the worker may answer once (allow_responses).
            try await gw.send(.sub("_INBOX.gw.*", sid: "inbox"))
            try await gw.send(.pub("kiln.build.request", reply: "_INBOX.gw.1"), payload: Array("job".utf8))
            let req = try await wk.read(op: .msg)
            #expect(req?.header.reply == "_INBOX.gw.1")
            try await wk.send(.pub("_INBOX.gw.1"), payload: Array("accepted".utf8))
            await #expect(try wk.roundTrip())
            let reply = try await gw.read(op: .msg)
            #expect(reply.map { String(buffer: $0.payload) } == "accepted")
            try await wk.send(.pub("_INBOX.gw.1"), payload: Array("again".utf8))
            await #expect(try wk.read(op: .err)?.header.code == 403, "a response allowance is used once")
            await admin.close()
        }
    }

    @Test func slowConsumerIsCutOff() async throws {
        let metrics = PrometheusExporter()
        try await withBroker(
            {
                $0.maxFrame = 64 * 1024
                $0.outboundCap = 16 << 20
            }, metrics: metrics
        ) { broker, port in
            let slow = try RawBusConnection(port: port, receiveBuffer: 16 * 1024)
            try await slow.handshake()
            try await slow.send(.sub("flood", sid: "1"))
            await #expect(try slow.roundTrip())
            let healthy = try await client(port)
            let hsub = try healthy.subscribe("flood")
            try await healthy.flush()
            let pub = try await client(port)
            let chunk = [UInt8](repeating: 7, count: 60 * 1024)
            let n = 600
            let received = ReceivedCount()
            let drain = Task {
                for await _ in hsub {
                    if received.increment() == n { break }
                }
                return received.value
            }
            // Paced by what the healthy subscriber has taken (never more than ~3 MB behind), so
            // only the subscriber that stopped reading can pass the cap, however loaded the machine.
            for batch in stride(from: 0, to: n, by: 50) {
                for _ in 0..<50 { try await pub.publish("flood", payload: chunk) }
                try await pub.flush()
                await eventually(within: .seconds(30), every: .milliseconds(5)) { received.value >= batch }
            }
            let timeout = Task {
                try await Task.sleep(for: .seconds(30))
                drain.cancel()
            }
            let drained = await drain.value
            timeout.cancel()
            #expect(drained == n, "a healthy subscriber gets everything")
            // The slow one: cut off with an err frame after whatever fit in the buffers.
            var sawErr: BusHeader?
            while let f = try await slow.readFrame(timeout: 10) {
                if f.header.op == .err { sawErr = f.header }
            }
            #expect(sawErr?.code == 429)
            #expect(sawErr?.message?.contains("slow consumer") == true)
            #expect(metrics.exposition().contains("kiln_broker_slow_consumers_total 1"))
            await healthy.close()
            await pub.close()
        }
    }

    @Test func keepaliveClosesStaleConnections() async throws {
        // A second between pings: the library client must answer one within two intervals, and on a
        // loaded machine (a CI runner beside a TCG VM) 150 ms was not always enough.
        try await withBroker({ $0.pingInterval = .seconds(1) }) { _, port in
            let live = try await client(port)
            let stale = try RawBusConnection(port: port)
            try await stale.handshake()
            let start = ContinuousClock.now
            var pings = 0
            var err: BusHeader?
            while let f = try await stale.readFrame(timeout: 5) {
                if f.header.op == .ping { pings += 1 }
                if f.header.op == .err { err = f.header }
            }
            // Two unanswered pings close it (exactly two: `ConnectionStateMachineTests`, on an injected
            // clock). Here the count may be higher: on a loaded machine a tick can fall before the
            // broker has read the connect frame, whose arrival then counts as traffic.
            #expect(pings >= 2)
            #expect(err?.code == 408)
            #expect(ContinuousClock.now - start < .seconds(60))
            // The library client answers pings and stays up (past two more intervals).
            try await Task.sleep(for: .milliseconds(2500))
            #expect(live.isConnected)
            try await live.flush()
            await live.close()
        }
    }

    @Test func verboseModeAcknowledges() async throws {
        try await withBroker { _, port in
            let conn = try RawBusConnection(port: port)
            try await conn.handshake(verbose: true)
            await #expect(try conn.read(op: .ok) != nil)
            try await conn.send(.sub("v", sid: "1"))
            await #expect(try conn.readFrame()?.header.op == .ok)
            try await conn.send(.pub("v"), payload: [1])
            let frames = await [try conn.readFrame(), try conn.readFrame()].compactMap { $0?.header.op }
            #expect(Set(frames) == [.ok, .msg])
        }
    }
}

/// Messages a test subscriber has taken so far, shared with the task that takes them.
final class ReceivedCount: Sendable {
    private let count = Mutex(0)
    var value: Int { count.withLock { $0 } }
    func increment() -> Int {
        count.withLock {
            $0 += 1
            return $0
        }
    }
}
