import Foundation
import KilnAttestation
import KilnMessages
import KilnPool
import Testing

/// What the pool accepts as a certification request, without sockets: the subject names one worker,
/// the broker stamped that worker's own identity, the body names the same worker and a real key.
@Suite struct WorkerCertifierTests {
    let certifier = WorkerCertifier(configuration: .init(farmKey: SigningKey()))
    let key = SigningKey().publicKey

    func body(_ id: String, _ publicKey: String? = nil) -> [UInt8] {
        Array(try! JSONEncoder().encode(WorkerCertificateRequest(workerID: id, publicKey: publicKey ?? key.hex)))
    }

    func refusal(
        _ subject: String, _ sender: String?, _ payload: [UInt8], reply: String? = "_INBOX.w1.r1", by certifier: WorkerCertifier? = nil
    ) -> String? {
        if case .failure(let r) = (certifier ?? self.certifier).check(subject: subject, sender: sender, reply: reply, payload: payload) {
            return r.description
        }
        return nil
    }

    @Test func aWellFormedRequestFromTheWorkersOwnIdentityIsAccepted() throws {
        let accepted = try certifier.check(subject: "kiln.worker.w1.certify", sender: "worker:w1", reply: "_INBOX.w1.a", payload: body("w1")).get()
        #expect(accepted.workerID == "w1" && accepted.key.hex == key.hex)
    }

    /// The answer goes to the requesting worker's own inbox or nowhere: a reply subject of the
    /// requester's choosing (another worker's inbox, a job's control subject) would make the pool
    /// publish there. Watched failing before the check: the pool answered onto `kiln.build.j1.control`.
    @Test func anAnswerElsewhereThanTheWorkersInboxIsRefusedAndNotPublished() {
        for reply in [nil, "_INBOX.w2.r1", "_INBOX.w1", "_INBOX.w10.r1", "kiln.build.j1.control", "kiln.worker.w2.certify"] {
            #expect(refusal("kiln.worker.w1.certify", "worker:w1", body("w1"), reply: reply)?.contains("inbox") == true, "\(reply ?? "nil")")
            #expect(WorkerCertifier.answerSubject(for: "kiln.worker.w1.certify", reply: reply) == nil, "\(reply ?? "nil")")
        }
        #expect(WorkerCertifier.answerSubject(for: "kiln.worker.w1.certify", reply: "_INBOX.w1.r1") == "_INBOX.w1.r1")
    }

    /// On nats-server with Kiln's accounts the subject is the proof (only worker w1's user may publish
    /// on it); a `kiln-sender` header there is the publisher's own words and changes nothing.
    @Test func onNATSWithKilnAccountsTheSubjectProvesTheWorker() throws {
        let nats = WorkerCertifier(configuration: .init(farmKey: SigningKey(), senderProof: .subjectOnNATSWithKilnAccounts))
        #expect(refusal("kiln.worker.w1.certify", nil, body("w1"), by: nats) == nil)
        #expect(refusal("kiln.worker.w1.certify", "worker:w2", body("w1"), by: nats) == nil)
        // Everything else still holds: the body's worker, the key, the inbox.
        #expect(refusal("kiln.worker.w1.certify", nil, body("w2"), by: nats)?.contains("names worker w2") == true)
        #expect(refusal("kiln.worker.w1.certify", nil, body("w1", "zz"), by: nats)?.contains("public_key") == true)
        #expect(refusal("kiln.worker.w1.certify", nil, body("w1"), reply: "_INBOX.w2.x", by: nats)?.contains("inbox") == true)
        // The same request unstamped on kiln-broker is refused.
        #expect(refusal("kiln.worker.w1.certify", nil, body("w1"))?.contains("not stamped") == true)
    }

    @Test func requestsThatAreNotTheWorkersOwnAreRefused() {
        // No stamp (a bus that does not authenticate), another worker's stamp, a password user's.
        #expect(refusal("kiln.worker.w1.certify", nil, body("w1"))?.contains("not stamped") == true)
        #expect(refusal("kiln.worker.w1.certify", "worker:w2", body("w1"))?.contains("bus identity") == true)
        #expect(refusal("kiln.worker.w1.certify", "pool", body("w1"))?.contains("bus identity") == true)
        // The body names another worker than the subject.
        #expect(refusal("kiln.worker.w1.certify", "worker:w1", body("w2"))?.contains("names worker w2") == true)
        // Not a key; not JSON; oversized; not a certification subject.
        #expect(refusal("kiln.worker.w1.certify", "worker:w1", body("w1", "zz"))?.contains("public_key") == true)
        #expect(refusal("kiln.worker.w1.certify", "worker:w1", Array("{".utf8))?.contains("not valid JSON") == true)
        #expect(refusal("kiln.worker.w1.certify", "worker:w1", [UInt8](repeating: 32, count: 5000))?.contains("not valid JSON") == true)
        #expect(refusal("kiln.worker.w1.x.certify", "worker:w1", body("w1")) != nil)
        #expect(refusal("kiln.worker.*.certify", "worker:*", body("*")) != nil)
    }

    @Test func theCertificateNamesTheKeyTheWorkerTheImageAndALifetime() throws {
        let farm = SigningKey()
        let image = [ResourceDescriptor(name: "vmlinuz", digest: ["sha256": String(repeating: "a", count: 64)])]
        let certifier = WorkerCertifier(configuration: .init(farmKey: farm, image: image, lifetime: .seconds(600)))
        let now = Date(timeIntervalSince1970: 1_800_000_000)
        let envelope = try certifier.issue(workerID: "w1", key: key, now: now)
        let (certificate, issuer) = try WorkerCertificate.verify(envelope, trustedKeys: [farm.publicKey], trustedFingerprints: [])
        #expect(issuer.keyID == farm.publicKey.keyID)
        #expect(certificate.workerID == "w1" && certificate.publicKey == key.hex && certificate.image == image)
        #expect(certificate.notBefore == "2027-01-15T07:59:00Z" && certificate.notAfter == "2027-01-15T08:10:00Z")
    }

    @Test func theImageManifestMustNameEachPartWithADigest() throws {
        let dir = FileManager.default.temporaryDirectory.appendingPathComponent("kiln-image-\(UUID().uuidString)").path
        try FileManager.default.createDirectory(atPath: dir, withIntermediateDirectories: true)
        defer { try? FileManager.default.removeItem(atPath: dir) }
        let good = #"{"parts": [{"name": "vmlinuz", "digest": {"sha256": "\#(String(repeating: "b", count: 64))"}}]}"#
        try good.write(toFile: dir + "/good.json", atomically: true, encoding: .utf8)
        #expect(try WorkerCertifier.image(manifest: dir + "/good.json").first?.name == "vmlinuz")
        for bad in [#"{"parts": []}"#, #"{"parts": [{"name": "x", "digest": {"sha256": "12"}}]}"#, #"{"kernel": {}}"#, "nope"] {
            try bad.write(toFile: dir + "/bad.json", atomically: true, encoding: .utf8)
            #expect(throws: WorkerCertifier.Refusal.self) { try WorkerCertifier.image(manifest: dir + "/bad.json") }
        }
    }
}
