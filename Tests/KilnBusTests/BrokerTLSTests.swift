import Foundation
import KilnBus
import KilnBusClient
import KilnTestSupport
import Logging
import Testing

/// #11 item 3: TLS on the bus, and mTLS mapping a client certificate to a user.
@Suite struct BrokerTLSTests {
    func client(_ port: Int, tls: BusClient.Configuration.TLS?, user: String? = nil, password: String? = nil) async throws -> BusClient {
        var c = try BusClient.Configuration(url: "kilns://127.0.0.1:\(port)")
        c.tls = tls
        c.user = user
        c.password = password
        c.reconnect = false
        return try await BusClient.connect(c, logger: Logger(label: "tls-test"))
    }

    @Test func aClientThatTrustsTheCATalksOverTLSAndNothingElseGetsIn() async throws {
        let dir = try TemporaryDirectory()
        let pki = try await TestCertificates(directory: dir.path)
        let broker = try await BrokerProcess(arguments: ["--tls-cert", pki.serverCert, "--tls-key", pki.serverKey])
        defer { broker.stop() }
        let a = try await client(broker.port, tls: .init(caFile: pki.caCert))
        let b = try await client(broker.port, tls: .init(caFile: pki.caCert))
        let sub = try a.subscribe("secret.subject")
        try await a.flush()
        try await b.publish("secret.subject", payload: Array("over tls".utf8))
        let msg = try #require(await sub.first(within: .seconds(60)))
        #expect(msg.payloadBytes == Array("over tls".utf8))
        await a.close()
        await b.close()
        // A client that trusts another CA refuses the broker.
        await #expect(throws: (any Error).self) { _ = try await client(broker.port, tls: .init(caFile: pki.rogueCA)) }
        // A plaintext client gets no INFO frame: the broker speaks only TLS.
        let raw = try RawBusConnection(port: broker.port)
        try await raw.send(BusHeader(op: .ping))
        await #expect((try? raw.read(op: .info, timeout: 1)) == nil)
    }

    @Test func mutualTLSLogsInAsTheCertificatesUserAndRefusesClientsWithout() async throws {
        let dir = try TemporaryDirectory()
        let pki = try await TestCertificates(directory: dir.path, clients: ["alice"])
        try #"{"users": [{"user": "alice", "permissions": {}}, {"user": "bob", "password": "pb", "permissions": {}}]}"#
            .write(toFile: dir.file("users.json"), atomically: true, encoding: .utf8)
        let broker = try await BrokerProcess(arguments: [
            "--tls-cert", pki.serverCert, "--tls-key", pki.serverKey,
            "--tls-client-ca", pki.caCert, "--users", dir.file("users.json"),
        ])
        defer { broker.stop() }
        let alice = try await client(broker.port, tls: .init(caFile: pki.caCert, certificateFile: pki.clientCert("alice"), keyFile: pki.clientKey("alice")))
        let listener = try await client(broker.port, tls: .init(caFile: pki.caCert, certificateFile: pki.clientCert("alice"), keyFile: pki.clientKey("alice")))
        let sub = try listener.subscribe("who")
        try await listener.flush()
        try await alice.publish("who", payload: [1])
        let msg = try #require(await sub.first(within: .seconds(60)))
        #expect(msg.headers?[BusHeader.senderHeader] == "alice", "the certificate's common name is the stamped identity")
        await alice.close()
        await listener.close()
        // No client certificate: the TLS handshake fails, even with a valid password.
        await #expect(throws: (any Error).self) { _ = try await client(broker.port, tls: .init(caFile: pki.caCert), user: "bob", password: "pb") }
    }
}
