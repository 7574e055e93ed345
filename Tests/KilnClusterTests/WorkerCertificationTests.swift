import Foundation
import KilnAttestation
import KilnBusClient
import KilnMessages
import KilnTestSupport
import Testing

/// #19 item 3 over real processes: kiln-pool certifies the in-memory key of each worker it launched,
/// the result carries the certificate, and `kiln verify` with only the farm key pinned follows farm
/// key → worker key → provenance. Nobody else gets a key certified.
@Suite(.serialized) struct WorkerCertificationTests {
    static let nonce = "c0ffee00c0ffee00c0ffee00c0ffee00"

    @Test func aWorkersInMemoryKeyIsCertifiedAndItsResultVerifiesWithTheFarmKey() async throws {
        let dir = try TemporaryDirectory(prefix: "kiln-cert")
        let farm = try await CertifyingFarm.start(dir: dir)
        defer { farm.stop() }
        let result = try await farm.buildHello(name: "certified", nonce: Self.nonce)
        let (status, report, text) = try await farm.verify(result, nonce: Self.nonce)
        #expect(status == 0, "\(text)\n\(farm.pool.output.suffix(10))")
        #expect(report?["key_trust"] as? String == "farm-certified", "\(text)")
        // Signed by the worker's own key, not the farm's; the farm key only certified it.
        #expect(report?["key_fingerprint"] as? String != farm.farmKey.publicKey.keyID)
        let certificate = report?["worker_certificate"] as? [String: Any]
        #expect(certificate?["issuer_key_id"] as? String == farm.farmKey.publicKey.keyID, "\(text)")
        #expect((certificate?["worker_id"] as? String)?.hasPrefix("w") == true)
        // No worker ever made a key file: the one the template names does not exist.
        #expect(!FileManager.default.fileExists(atPath: dir.file("no-such-key.pem")))
        await #expect((farm.metric("kiln_pool_certificates_issued_total") ?? 0) >= 1)
        // Another key pinned instead of the farm's: the certificate does not verify.
        let other = SigningKey()
        try other.publicKey.hex.write(toFile: dir.file("other.pub"), atomically: true, encoding: .utf8)
        let (otherStatus, _, otherText) = try await farm.verify(result, nonce: Self.nonce, key: dir.file("other.pub"))
        #expect(otherStatus != 0 && otherText.contains("not signed by a farm key you pinned"), "\(otherText)")
    }

    /// Certificates go only to a worker this pool launched, still booting, asking from its own bus
    /// identity, once: a leaked credential cannot get a key certified, for its own id or another's.
    @Test func nobodyButTheLaunchedWorkerGetsAKeyCertifiedAndOnlyOnce() async throws {
        let dir = try TemporaryDirectory(prefix: "kiln-cert-hostile")
        let farm = try await CertifyingFarm.start(dir: dir)
        defer { farm.stop() }
        // Wait for the pool's worker to be certified and ready.
        #expect(await eventually(within: .seconds(60), every: .milliseconds(100)) { await farm.metric("kiln_pool_ready_workers") == 1 })
        let launched = try #require(
            (try FileManager.default.contentsOfDirectory(atPath: dir.file("pool/workers"))).first.map { String($0.dropLast(".log".count)) })
        let key = SigningKey().publicKey.hex
        func ask(as identity: String, for id: String) async throws -> String {
            let client = try await farm.connectAsWorker(identity)
            defer { Task { await client.close() } }
            let body = try JSONEncoder().encode(WorkerCertificateRequest(workerID: id, publicKey: key))
            do {
                let reply = try await client.request(Subjects.workerCertify(id), payload: Array(body), timeout: .seconds(5))
                let answer = try JSONDecoder().decode(WorkerCertificateReply.self, from: Data(reply.payloadBytes))
                return answer.error ?? "CERTIFIED"
            } catch {
                return "no answer: \(error)"
            }
        }
        // A worker id the pool never launched, with a valid credential of its own.
        #expect(try await ask(as: "wleaked", for: "wleaked").contains("did not launch worker wleaked"))
        // Another worker's subject: the broker refuses the publish, so the pool never hears it.
        #expect(try await ask(as: "wleaked", for: launched).hasPrefix("no answer"))
        // The launched worker's own identity, a second time (a key swap after boot): refused.
        #expect(try await ask(as: launched, for: launched).contains("already certified"))
        await #expect((farm.metric("kiln_pool_certificates_refused_total") ?? 0) >= 2)
        await #expect(farm.metric("kiln_pool_certificates_issued_total") == 1)
    }
}
