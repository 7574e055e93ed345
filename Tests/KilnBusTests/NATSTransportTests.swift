import Foundation
import KilnBus
import KilnTestSupport
import NIOConcurrencyHelpers
import NIOCore
import Testing

@testable import KilnBusClient

/// #15 item 1: the bus client speaking the NATS protocol to real nats-servers (Debian's), with the
/// semantics Kiln relies on.
@Suite(.serialized) struct NATSTransportTests {
    func client(_ url: String, _ configure: (inout BusClient.Configuration) -> Void = { _ in }) async throws -> BusClient {
        var configuration = try BusClient.Configuration(url: url)
        configure(&configuration)
        return try await BusClient.connect(configuration)
    }

    func first(_ subscription: BusSubscription, within seconds: Int64 = 5) async throws -> BusMessage? {
        try await withThrowingTaskGroup(of: BusMessage?.self) { group in
            group.addTask {
                var iterator = subscription.makeAsyncIterator()
                return await iterator.next()
            }
            group.addTask {
                try await Task.sleep(for: .seconds(seconds))
                return nil
            }
            let result = try await group.next() ?? nil
            group.cancelAll()
            return result
        }
    }

    @Test func wildcardsHeadersQueueGroupsOneShotsAndRequestReply() async throws {
        let server = try await NATSServerProcess()
        defer { server.stop() }
        let a = try await client(server.url)
        let b = try await client(server.url)
        defer {
            Task {
                await a.close()
                await b.close()
            }
        }
        #expect(a.maxFrame == 1 << 20, "max_payload from INFO")

        // Wildcards and headers, payload bytes untouched (CRLF inside included).
        let star = try a.subscribe("kiln.build.*.events")
        try await a.flush()
        let payload: [UInt8] = Array("line one\r\nline two\r\n".utf8) + [0, 255, 13, 10]
        try await b.publish("kiln.build.j1.events", payload: payload, headers: ["kiln-job": "j1", "index": "3"])
        let got = try #require(try await first(star))
        #expect(got.subject == "kiln.build.j1.events" && Array(got.payload.readableBytesView) == payload)
        #expect(got.headers?["kiln-job"] == "j1" && got.headers?["index"] == "3", "\(String(describing: got.headers))")

        // A queue group: one delivery per message across the group.
        let q1 = try a.subscribe("kiln.work", queue: "workers")
        let q2 = try b.subscribe("kiln.work", queue: "workers")
        try await a.flush()
        try await b.flush()
        for i in 0..<20 { try await b.publish("kiln.work", payload: Array("\(i)".utf8)) }
        try await b.flush()
        let counts = Counter()
        let readers = [q1, q2].map { sub in Task { for await _ in sub { counts.add() } } }
        #expect(await eventually { counts.value == 20 })
        try await b.publish("kiln.work.flush", payload: [UInt8]())
        try await a.flush()
        for reader in readers { reader.cancel() }
        let delivered = counts.value
        #expect(delivered == 20, "each message once across the group")

        // A one-shot: the server drops it after one delivery.
        let once = try a.subscribe("kiln.once", max: 1)
        try await a.flush()
        for _ in 0..<3 { try await b.publish("kiln.once", payload: [1]) }
        var count = 0
        for await _ in once { count += 1 }
        #expect(count == 1)

        // Request/reply, and no responders at once (not a timeout).
        let echo = try a.subscribe("kiln.echo")
        try await a.flush()
        let responder = Task {
            for await m in echo {
                if let reply = m.reply { try await a.publish(reply, payload: m.payload, headers: ["status": "200"]) }
            }
        }
        defer { responder.cancel() }
        let answer = try await b.request("kiln.echo", payload: Array("ping".utf8), timeout: .seconds(5))
        #expect(String(buffer: answer.payload) == "ping" && answer.status == "200")
        let started = ContinuousClock.now
        await #expect(throws: BusClientError.noResponders(subject: "kiln.nobody")) {
            _ = try await b.request("kiln.nobody", payload: [UInt8](), timeout: .seconds(60))
        }
        #expect(ContinuousClock.now - started < .seconds(30), "no responders comes long before the timeout")
    }

    @Test func credentialsAreCheckedAndAWrongPasswordIsRefused() async throws {
        let server = try await NATSServerProcess(arguments: ["--user", "gateway", "--pass", "s3cret"])
        defer { server.stop() }
        let ok = try await client("nats://gateway:s3cret@127.0.0.1:\(server.port)")
        try await ok.flush()
        await ok.close()
        await #expect(throws: BusClientError.self) {
            _ = try await client("nats://gateway:wrong@127.0.0.1:\(server.port)") { $0.reconnect = false }
        }
    }

    /// nats-server's TLS: the greeting in plain text, then the client upgrades, checking the server's
    /// certificate against the CA it was given; a server whose certificate another CA signed is refused.
    @Test func tlsToNATSServerUpgradesAfterTheGreetingAndChecksTheCertificate() async throws {
        let dir = try TemporaryDirectory(prefix: "kiln-nats-tls")
        let pki = try await TestCertificates(directory: dir.path)
        let server = try await NATSServerProcess(arguments: ["--tls", "--tlscert", pki.serverCert, "--tlskey", pki.serverKey])
        defer { server.stop() }
        let secure = try await client("nats+tls://127.0.0.1:\(server.port)") { $0.tls = .init(caFile: pki.caCert) }
        let sub = try secure.subscribe("kiln.tls")
        try await secure.flush()
        try await secure.publish("kiln.tls", payload: Array("over tls".utf8))
        #expect(try await first(sub).map { String(buffer: $0.payload) } == "over tls")
        await secure.close()
        await #expect(throws: BusClientError.self, "a certificate from another CA") {
            _ = try await client("nats+tls://127.0.0.1:\(server.port)") {
                $0.tls = .init(caFile: pki.rogueCA)
                $0.reconnect = false
            }
        }
        await #expect(throws: BusClientError.self, "plain text to a server that requires TLS") {
            _ = try await client("nats://127.0.0.1:\(server.port)") { $0.reconnect = false }
        }
    }

    /// A cluster member dies: the client reconnects to another member, its live subscriptions come
    /// back (a spent one-shot does not), and messages published through the other member reach it.
    @Test func aLostMemberIsReplacedByAnotherWithSubscriptionsRenewed() async throws {
        let first = try await NATSServerProcess(cluster: "kiln")
        let second = try await NATSServerProcess(cluster: "kiln", routes: [try #require(first.routePort)])
        defer {
            first.stop()
            second.stop()
        }
        let subscriber = try await client("nats://127.0.0.1:\(first.port),nats://127.0.0.1:\(second.port)")
        let publisher = try await client(second.url)
        defer {
            Task {
                await subscriber.close()
                await publisher.close()
            }
        }
        let live = try subscriber.subscribe("kiln.workers.ready")
        let spent = try subscriber.subscribe("kiln.spent", max: 1)
        try await subscriber.flush()
        // The route carries the interest to the second member.
        #expect(await eventually(within: .seconds(60)) { (try? await self.hasInterest(publisher, "kiln.workers.ready")) == true })
        try await publisher.publish("kiln.spent", payload: [1])
        var spentCount = 0
        for await _ in spent { spentCount += 1 }
        #expect(spentCount == 1)

        first.stop()
        _ = try await first.process.waitForExit(timeout: .seconds(10))
        #expect(await eventually(within: .seconds(60)) { subscriber.isConnected && subscriber.currentServer.port == second.port })
        try await subscriber.flush()
        try await publisher.publish("kiln.workers.ready", payload: Array("after".utf8))
        try await publisher.publish("kiln.spent", payload: [2])
        try await publisher.flush()
        let sawAfter = try await withThrowingTaskGroup(of: Bool.self) { group in
            group.addTask {
                for await m in live where String(buffer: m.payload) == "after" { return true }
                return false
            }
            group.addTask {
                try await Task.sleep(for: .seconds(10))
                return false
            }
            let seen = try await group.next() ?? false
            group.cancelAll()
            return seen
        }
        #expect(sawAfter, "the live subscription was renewed on the other member")
        #expect(try await hasInterest(publisher, "kiln.spent") == false, "the spent one-shot was not renewed")
    }

    /// Whether anyone is subscribed to `subject` (a request that is not answered with no-responders).
    func hasInterest(_ client: BusClient, _ subject: String) async throws -> Bool {
        do {
            _ = try await client.request(subject, payload: [UInt8](), timeout: .milliseconds(300))
            return true
        } catch BusClientError.noResponders {
            return false
        } catch BusClientError.timeout {
            return true
        }
    }
}

final class Counter: Sendable {
    private let count = NIOLockedValueBox(0)
    func add() { count.withLockedValue { $0 += 1 } }
    var value: Int { count.withLockedValue { $0 } }
}

/// The NATS decoder over bytes alone: split reads, headers and status, hostile sizes.
@Suite struct NATSInboundDecoderTests {
    func decode(_ chunks: [String]) throws -> [BusInbound] {
        var decoder = NATSInboundDecoder()
        var out: [BusInbound] = []
        for chunk in chunks {
            decoder.append(ByteBuffer(string: chunk))
            while let item = try decoder.next() { out.append(item) }
            decoder.compact()
        }
        return out
    }

    @Test func messagesSplitAnywhereDecodeTheSame() throws {
        let wire =
            "INFO {\"server_id\":\"x\",\"max_payload\":2048,\"nonce\":\"a-B_9\"}\r\nPING\r\nMSG a.b 7 _INBOX.r 5\r\nhello\r\nHMSG a.c 8 18 22\r\nNATS/1.0\r\nk: v\r\n\r\nbody\r\n+OK\r\n"
        let whole = try decode([wire])
        for split in 1..<wire.utf8.count {
            let bytes = Array(wire.utf8)
            let parts = [String(decoding: bytes[..<split], as: UTF8.self), String(decoding: bytes[split...], as: UTF8.self)]
            #expect(try decode(parts).count == whole.count, "split at \(split)")
        }
        guard case .hello(let max) = whole[0], case .ping = whole[1], case .message(let sid, let m) = whole[2], case .message(let sid2, let h) = whole[3] else {
            Issue.record("\(whole)")
            return
        }
        #expect(max.maxFrame == 2048 && max.nonce == "a-B_9" && sid == "7" && m.reply == "_INBOX.r" && String(buffer: m.payload) == "hello")
        #expect(sid2 == "8" && h.headers?["k"] == "v" && String(buffer: h.payload) == "body")
    }

    @Test func noRespondersIsStatus503() throws {
        let items = try decode(["HMSG _INBOX.x 1 16 16\r\nNATS/1.0 503\r\n\r\n\r\n"])
        guard case .message(_, let m) = items.first else {
            Issue.record("\(items)")
            return
        }
        #expect(m.status == "503")
    }

    @Test func hostileSizesAreProtocolErrors() {
        for bad in [
            "MSG a 1 99999999999999999999\r\n", "MSG a 1 -5\r\n", "HMSG a 1 10 5\r\n", "MSG a 1 2\r\nabXY", "BOGUS\r\n", "MSG a\r\n",
            String(repeating: "x", count: 70_000),
        ] {
            #expect(throws: BusError.self, "\(bad.prefix(40))") { _ = try decode([bad]) }
        }
    }

    /// Mutated server output in random splits: a message, a protocol error or a wait for more bytes —
    /// never a trap, an out-of-range read or a hang.
    @Test func mutatedInputNeverCrashesTheDecoder() {
        let seed = Array(
            ("INFO {\"max_payload\":2048}\r\nMSG a.b 7 _INBOX.r 5\r\nhello\r\nHMSG a.c 8 18 22\r\nNATS/1.0\r\nk: v\r\n\r\nbody\r\n"
                + "HMSG _INBOX.x 1 16 16\r\nNATS/1.0 503\r\n\r\n\r\nPING\r\n-ERR 'Permissions Violation'\r\n").utf8)
        var rng = SystemRandomNumberGenerator()
        for _ in 0..<5000 {
            var bytes = seed
            for _ in 0..<Int.random(in: 1...6, using: &rng) {
                let i = Int.random(in: 0..<bytes.count, using: &rng)
                switch Int.random(in: 0..<3, using: &rng) {
                case 0: bytes[i] = UInt8.random(in: 0...255, using: &rng)
                case 1: bytes.insert(Array("0123456789 \r\n".utf8).randomElement(using: &rng)!, at: i)
                default: if bytes.count > 1 { bytes.remove(at: i) }
                }
            }
            var decoder = NATSInboundDecoder()
            var offset = 0
            feeding: while offset < bytes.count {
                let end = min(bytes.count, offset + Int.random(in: 1...64, using: &rng))
                decoder.append(ByteBuffer(bytes: bytes[offset..<end]))
                offset = end
                var items = 0
                while true {
                    let item: BusInbound?
                    do { item = try decoder.next() } catch { break feeding }  // a protocol error closes the connection
                    guard item != nil else { break }
                    items += 1
                    if items > 10_000 {
                        Issue.record("the decoder kept yielding on \(bytes.count) bytes")
                        return
                    }
                }
                decoder.compact()
            }
        }
    }

    @Test func publishesAreWhatNATSExpects() {
        var buffer = ByteBuffer()
        let wire = NATSWireProtocol()
        #expect(wire.writePublish(subject: "a.b", reply: nil, headers: nil, payload: Array("hi".utf8), to: &buffer) == 2)
        #expect(String(buffer: buffer) == "PUB a.b 2\r\nhi\r\n")
        buffer.clear()
        let size = wire.writePublish(subject: "a.b", reply: "_INBOX.1", headers: ["index": "2", "bad\r\nkey": "x"], payload: Array("hi".utf8), to: &buffer)
        #expect(String(buffer: buffer) == "HPUB a.b _INBOX.1 22 24\r\nNATS/1.0\r\nindex: 2\r\n\r\nhi\r\n" && size == 24)
        buffer.clear()
        wire.write(.subscribe(sid: "4", subject: "kiln.build.request", queue: "workers", max: 1), to: &buffer)
        #expect(String(buffer: buffer) == "SUB kiln.build.request workers 4\r\nUNSUB 4 1\r\n")
    }
}
