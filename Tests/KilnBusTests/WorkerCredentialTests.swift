import Crypto
import Foundation
import KilnBroker
import KilnBus
import KilnTestSupport
import NIOCore
import Testing

@Suite struct WorkerCredentialTests {
    let operatorKey = Curve25519.Signing.PrivateKey()
    let now: Int64 = 1_800_000_000

    func credential(_ id: String = "w1", exp: Int64? = nil, iat: Int64? = nil, key: Curve25519.Signing.PrivateKey? = nil) throws -> String {
        try WorkerCredential(workerID: id, issuedAt: iat ?? now, expiresAt: exp ?? now + 600).mint(key: key ?? operatorKey)
    }

    @Test func aMintedCredentialVerifiesAsItsWorker() throws {
        let c = try WorkerCredential.verify(try credential("w-abc_1"), key: operatorKey.publicKey, now: now + 10)
        #expect(c.workerID == "w-abc_1" && c.identity == "worker:w-abc_1")
    }

    @Test func forgedExpiredAndMalformedCredentialsAreRefused() throws {
        let other = Curve25519.Signing.PrivateKey()
        let cases: [(String, String)] = [
            (try credential(key: other), "not signed"),
            (try credential(exp: now - 1), "expired"),
            (try credential(iat: now + 3600), "future"),
            (try credential("w1.>"), "invalid worker id"),
            ("kiln-cred-v1.abc", "malformed"),
            ("kiln-cred-v1." + String(repeating: "a", count: 5000), "not a worker credential"),
        ]
        for (text, reason) in cases {
            #expect(throws: BusError.self, "\(reason)") { try WorkerCredential.verify(text, key: operatorKey.publicKey, now: now) }
        }
        // Claims edited after signing (a longer lifetime) no longer match the signature.
        let genuine = try credential()
        let parts = genuine.split(separator: ".")
        let longer = try credential(exp: now + 999_999)
        let spliced = parts[0] + "." + longer.split(separator: ".")[1] + "." + parts[2]
        #expect(throws: BusError.self) { try WorkerCredential.verify(String(spliced), key: operatorKey.publicKey, now: now) }
    }

    /// What a leaked worker credential can and cannot do, decided by the state machine.
    @Test func aWorkerCredentialGrantsOnlyTheWorkersOwnSubjects() throws {
        let auth = Authenticator(.none, credentialKey: operatorKey.publicKey)
        var m = ConnectionStateMachine(configuration: .init(authenticator: auth), now: .now())
        var connect = BusHeader(op: .connect)
        connect.token = try WorkerCredential(
            workerID: "w1", issuedAt: Int64(Date().timeIntervalSince1970),
            expiresAt: Int64(Date().timeIntervalSince1970) + 60
        ).mint(key: operatorKey)
        #expect(m.frameReceived(connect, now: .now()) == .none)
        func sub(_ subject: String, queue: String? = nil) -> Bool {
            if case .subscribe = m.frameReceived(.sub(subject, sid: UUID().uuidString, queue: queue), now: .now()) { return true }
            return false
        }
        func pub(_ subject: String) -> Bool {
            if case .publish = m.frameReceived(.pub(subject), now: .now()) { return true }
            return false
        }
        #expect(sub("kiln.build.request", queue: "workers"))
        #expect(!sub("kiln.build.request"), "every request, outside the queue group")
        #expect(!sub("kiln.build.request", queue: "mine"))
        #expect(sub("_INBOX.w1.abc.*"))
        #expect(!sub("_INBOX.>"), "every reply and source chunk")
        #expect(!sub("_INBOX.w2.abc.*"))
        #expect(sub("kiln.worker.w1.request"))
        #expect(!sub("kiln.worker.w2.request"))
        #expect(!sub("kiln.build.*.events.*"))
        #expect(!sub("kiln.build.*.source.*"))
        // Everything it publishes ends in its own id: the subject says who sent it.
        #expect(pub("kiln.build.j1.events.w1") && pub("kiln.build.j1.result.w1") && pub("kiln.build.j1.source.w1") && pub("kiln.workers.ready.w1"))
        #expect(!pub("kiln.build.j1.events.w2") && !pub("kiln.build.j1.result.w2") && !pub("kiln.build.j1.source.w2") && !pub("kiln.workers.ready.w2"))
        #expect(!pub("kiln.build.j1.events") && !pub("kiln.workers.ready"))
        #expect(!pub("kiln.build.request"))
        #expect(!pub("kiln.build.j1.control"))
        // #29: a request's reply goes only to the worker's own inbox — never a subject the answerer
        // (the gateway, the fetch service) would publish to on the worker's behalf.
        func pub(_ subject: String, reply: String) -> Bool {
            var h = BusHeader.pub(subject)
            h.reply = reply
            if case .publish = m.frameReceived(h, now: .now()) { return true }
            return false
        }
        #expect(pub("kiln.build.j1.source.w1", reply: "_INBOX.w1.abc.1"))
        #expect(!pub("kiln.build.j1.source.w1", reply: "kiln.build.j2.control"), "the gateway would publish a chunk onto another job's control")
        #expect(!pub("kiln.build.j1.source.w1", reply: "_INBOX.w2.abc.1"), "another worker's inbox")
        #expect(!pub("kiln.worker.w1.fetch.crate", reply: "kiln.build.j2.events.w1"))
        // A password login is refused on a broker that accepts credentials only.
        var plain = ConnectionStateMachine(configuration: .init(authenticator: auth), now: .now())
        var c2 = BusHeader(op: .connect)
        c2.user = "gateway"
        c2.password = "x"
        guard case .fail(let e) = plain.frameReceived(c2, now: .now()) else {
            Issue.record("expected refusal")
            return
        }
        #expect(e.code == 401)
    }
}
