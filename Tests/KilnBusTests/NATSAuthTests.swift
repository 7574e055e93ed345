import Crypto
import Foundation
import KilnBus
import KilnCore
import KilnTestSupport
import Testing

@testable import KilnBusClient

/// #29 item 4: the same identity guarantees on NATS. Kiln runs its own NATS accounts (nkeys and JWTs
/// written here, checked by a real nats-server): every worker is a user whose permissions the server
/// enforces, and everything a worker publishes names its own id, so the subject says who sent it.
@Suite(.serialized) struct NATSAuthTests {
    // MARK: - nkeys and JWTs, against the NATS project's own test vector and the server

    /// nkeys' creds test vector (github.com/nats-io/nkeys, creds_utils_test.go): this seed's public key
    /// is the `sub` of the JWT beside it.
    @Test func aSeedFromTheNATSToolsGivesTheirPublicKey() throws {
        let key = try NATSKey(seed: "SUAOTBNEUHZDFJT3EUMELT7MQTP24JF3XVCXQNDSCU74G5IU6VAJBKH5LI")
        #expect(key.role == .user)
        #expect(key.publicKey == "UDE6WTGLTTPCRJRJCKBJRGVNZTLIVR7LEEELR4CYWWWBKJS7XYIKXDUU")
        #expect(key.seed == "SUAOTBNEUHZDFJT3EUMELT7MQTP24JF3XVCXQNDSCU74G5IU6VAJBKH5LI")
    }

    @Test(arguments: [NATSKey.Role.operator, .account, .user])
    func seedsRoundTripAndNameTheirRole(role: NATSKey.Role) throws {
        let key = NATSKey(role: role)
        let read = try NATSKey(seed: key.seed)
        #expect(read.role == role && read.publicKey == key.publicKey)
        #expect(key.publicKey.first == ["O", "A", "U"][[NATSKey.Role.operator, .account, .user].firstIndex(of: role)!])
    }

    @Test func aCorruptedOrForeignSeedIsRefused() {
        let seed = NATSKey(role: .user).seed
        var chars = Array(seed)
        chars[20] = chars[20] == "A" ? "B" : "A"
        #expect(throws: BusError.self) { try NATSKey(seed: String(chars)) }  // checksum
        #expect(throws: BusError.self) { try NATSKey(seed: NATSKey(role: .user).publicKey) }  // a public key, not a seed
        #expect(throws: BusError.self) { try NATSKey(seed: "SU" + String(repeating: "=", count: 56)) }
        #expect(throws: BusError.self) { try NATSKey(seed: String(repeating: "A", count: 5000)) }
    }

    @Test func credsTextRoundTripsAndAJWTIsSignedByItsIssuer() throws {
        let account = NATSKey(role: .account)
        let user = try NATSAccountSetup.user(BusRoles.worker("w1"), name: "worker:w1", accountKey: account, expires: 2_000_000_000, now: 1_000)
        let read = try NATSUserCredentials(creds: user.credsText)
        #expect(read.jwt == user.jwt && read.key.publicKey == user.key.publicKey)
        let parts = user.jwt.split(separator: ".")
        #expect(parts.count == 3)
        let signature = try #require(Base64.decode(parts[2]))
        #expect(account.privateKey.publicKey.isValidSignature(signature, for: Array(user.jwt.utf8.prefix(parts[0].count + 1 + parts[1].count))))
        let payload = try #require(Base64.decode(parts[1]))
        let claims = try #require(try JSONSerialization.jsonObject(with: Data(payload)) as? [String: Any])
        #expect(claims["iss"] as? String == account.publicKey && claims["sub"] as? String == user.key.publicKey && claims["exp"] as? Int == 2_000_000_000)
        #expect(throws: BusError.self) { try NATSUserCredentials(creds: "-----BEGIN NATS USER JWT-----\nnot.a\n") }
        // A seed of the wrong role in a creds file (an account's key handed out by mistake) is refused.
        let wrong = NATSUserCredentials(jwt: user.jwt, key: account).credsText
        #expect(throws: BusError.self) { try NATSUserCredentials(creds: wrong) }
    }

    @Test(
        arguments: [
            ("{\"nonce\":\"abc-_9\"}", "abc-_9"), ("{\"nonce\": \"x\"}", "x"), ("{}", nil), ("{\"nonce\":\"\"}", nil),
            ("{\"nonce\":\"a b\"}", nil), ("{\"nonce\":\"a\\\"b\"}", "a\\"), ("{\"nonce\":123}", nil),
        ] as [(String, String?)])
    func theNonceIsReadOnlyWhenItIsPlainBase64URL(info: String, nonce: String?) {
        // `a\"b` ends at the escaped quote's backslash, which is not base64url: refused.
        let read = NATSInboundDecoder.nonce(inInfo: Substring(info))
        #expect(read == (nonce == "a\\" ? nil : nonce))
        #expect(NATSInboundDecoder.nonce(inInfo: Substring("{\"nonce\":\"" + String(repeating: "a", count: 129) + "\"}")) == nil)
    }

    // MARK: - a real nats-server enforcing Kiln's roles

    struct Accounts {
        let dir: TemporaryDirectory
        let account = NATSKey(role: .account)
        let server: NATSServerProcess

        init() async throws {
            dir = try TemporaryDirectory(prefix: "kiln-nats-auth")
            let conf = try NATSAccountSetup.serverConfiguration(
                operatorKey: NATSKey(role: .operator), accountKey: account, accountName: "KILN", now: Int64(Date().timeIntervalSince1970))
            try conf.write(toFile: dir.file("nats.conf"), atomically: true, encoding: .utf8)
            server = try await NATSServerProcess(arguments: ["-c", dir.file("nats.conf")])
        }

        func client(_ rules: BusRoles.Rules, name: String, inbox: String? = nil, expires: Int64? = nil, signedBy key: NATSKey? = nil) async throws -> BusClient {
            var configuration = try BusClient.Configuration(url: server.url)
            configuration.reconnect = false
            configuration.inboxNamespace = inbox
            configuration.natsCredentials = try NATSAccountSetup.user(
                rules, name: name, accountKey: key ?? account, expires: expires, now: Int64(Date().timeIntervalSince1970))
            return try await BusClient.connect(configuration)
        }
    }

    @Test func theServerHoldsAWorkerToItsOwnSubjectsAndTheGatewayToItsRole() async throws {
        let farm = try await Accounts()
        defer { farm.server.stop() }
        let gateway = try await farm.client(BusRoles.gateway, name: "gateway")
        let w1 = try await farm.client(BusRoles.worker("w1"), name: "worker:w1", inbox: "w1", expires: Int64(Date().timeIntervalSince1970) + 600)
        defer {
            Task {
                await gateway.close()
                await w1.close()
            }
        }
        let events = try gateway.subscribe("kiln.build.*.events.*")
        let controls = try w1.subscribe("kiln.build.j1.control")
        try await gateway.flush()
        try await w1.flush()

        // Its own subject: delivered, and the subject names it.
        try await w1.publish("kiln.build.j1.events.w1", string: "mine")
        let got = await events.first(within: .seconds(5))
        #expect(got?.subject == "kiln.build.j1.events.w1" && got.map { String(buffer: $0.payload) } == "mine")
        // Another worker's subject, another job's control, a gateway subject: the server refuses each.
        for subject in ["kiln.build.j1.events.w2", "kiln.workers.ready.w2", "kiln.build.j1.control", "kiln.build.request", "kiln.worker.w2.fetch.crate"] {
            try await w1.publish(subject, string: "forged")
            let refused = await w1.asyncErrors.first(within: .seconds(10))
            #expect(refused?.code == 403, "publish \(subject): \(String(describing: refused))")
        }
        #expect(await events.first(within: .seconds(1)) == nil, "a refused publish reached the gateway")
        // It cannot read other workers' events or inboxes either.
        for subject in ["kiln.build.*.events.*", "_INBOX.>", "kiln.build.request"] {
            _ = try w1.subscribe(subject)
            let refused = await w1.asyncErrors.first(within: .seconds(10))
            #expect(refused?.code == 403, "subscribe \(subject): \(String(describing: refused))")
        }
        // The gateway's control reaches the worker; the gateway may not pose as a worker.
        try await gateway.publish("kiln.build.j1.control", string: "cancel")
        #expect(await controls.first(within: .seconds(5)).map { String(buffer: $0.payload) } == "cancel")
        try await gateway.publish("kiln.build.j1.events.w1", string: "posing")
        #expect(await gateway.asyncErrors.first(within: .seconds(10))?.code == 403)
    }

    @Test func loginsTheServerDoesNotTrustAreRefused() async throws {
        let farm = try await Accounts()
        defer { farm.server.stop() }
        let now = Int64(Date().timeIntervalSince1970)
        // No credentials at all; a user of an account the operator never signed; an expired worker.
        await #expect(throws: BusClientError.self) {
            var configuration = try BusClient.Configuration(url: farm.server.url)
            configuration.reconnect = false
            _ = try await BusClient.connect(configuration)
        }
        await #expect(throws: BusClientError.self) {
            _ = try await farm.client(BusRoles.worker("w1"), name: "rogue", signedBy: NATSKey(role: .account))
        }
        await #expect(throws: BusClientError.self) {
            _ = try await farm.client(BusRoles.worker("w1"), name: "stale", expires: now - 10)
        }
        // A JWT with another key's seed: the nonce signature does not match the JWT's user.
        await #expect(throws: BusClientError.self) {
            var configuration = try BusClient.Configuration(url: farm.server.url)
            configuration.reconnect = false
            let user = try NATSAccountSetup.user(BusRoles.worker("w1"), name: "w1", accountKey: farm.account, expires: nil, now: now)
            configuration.natsCredentials = NATSUserCredentials(jwt: user.jwt, key: NATSKey(role: .user))
            _ = try await BusClient.connect(configuration)
        }
    }
}
