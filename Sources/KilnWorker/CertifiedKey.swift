import Foundation
import KilnAttestation
import KilnBusClient
import KilnCore
import KilnMessages
import Logging

/// A worker key made in memory and certified by the pool that launched the worker (#19 item 3):
/// the worker never holds the farm key, and its own key dies with it.
public struct CertifiedKey: Sendable {
    public let key: SigningKey
    public let envelope: DSSEEnvelope
    public let certificate: WorkerCertificate

    public struct Error: Swift.Error, CustomStringConvertible {
        public let description: String
    }

    /// Asks the pool (`Subjects.workerCertify`) to certify a fresh key. Retries while nobody answers
    /// (a pool restarting), up to `attempts`; a refusal ends it at once, since asking again would not
    /// change the pool's mind.
    public static func obtain(
        client: BusClient, workerID: String, logger: Logger, attempts: Int = 6, timeout: Duration = .seconds(10)
    ) async throws -> CertifiedKey {
        let key = SigningKey()
        let request = Array(try JSONEncoder().encode(WorkerCertificateRequest(workerID: workerID, publicKey: key.publicKey.hex)))
        var lastProblem = "no attempt made"
        for attempt in 1...max(1, attempts) {
            let reply: BusMessage
            do {
                reply = try await client.request(
                    Subjects.workerCertify(workerID), payload: request, timeout: .nanoseconds(Int64(timeout.components.seconds) * 1_000_000_000))
            } catch let error as BusClientError {
                lastProblem = "\(error)"
                logger.warning("no certificate yet (attempt \(attempt) of \(attempts)): \(error)")
                try await Task.sleep(for: .seconds(1))
                continue
            }
            guard let answer = try? JSONDecoder().decode(WorkerCertificateReply.self, from: Data(reply.payloadBytes)) else {
                throw Error(description: "the pool's certificate reply is not JSON")
            }
            if let refusal = answer.error { throw Error(description: "the pool refused to certify this worker's key: \(refusal)") }
            guard let text = answer.certificate, let json = Base64.decode(text),
                let envelope = try? JSONDecoder().decode(DSSEEnvelope.self, from: Data(json)),
                let certificate = try? CanonicalJSON.decode(WorkerCertificate.self, from: envelope.payloadBytes())
            else {
                throw Error(description: "the pool's certificate is unreadable")
            }
            // Its signature is for verifiers to check against the farm key; here only that it is ours.
            guard certificate.publicKey == key.publicKey.hex, certificate.workerID == workerID else {
                throw Error(description: "the pool certified another key or worker (\(certificate.workerID), \(certificate.publicKey))")
            }
            logger.info(
                "signing key certified by the pool",
                metadata: ["key": "\(key.publicKey.keyID)", "issuer": "\(certificate.issuer)", "not_after": "\(certificate.notAfter)"])
            return CertifiedKey(key: key, envelope: envelope, certificate: certificate)
        }
        throw Error(description: "no pool certified this worker's key after \(attempts) attempts: \(lastProblem)")
    }
}
