import Foundation
import KilnCore

extension ResultVerifier {
    /// Farm key → worker key → provenance: the certificate is signed by a key the user pinned, names
    /// the key that signed this result, the worker the provenance names, and a validity that covers
    /// the build's end; the image the provenance records as its builder's dependencies is the image
    /// the certificate names.
    func checkCertificate(
        _ envelope: DSSEEnvelope, signer: PublicKey, statement: Statement, into report: inout VerificationReport
    ) throws(VerificationError) {
        let (certificate, issuer) = try WorkerCertificate.verify(
            envelope, trustedKeys: options.trustedKeys, trustedFingerprints: options.trustedKeyFingerprints)
        guard certificate.publicKey == signer.hex else {
            throw .init(.trust, "the worker certificate certifies key \(certificate.publicKey), but the result is signed by \(signer.hex)")
        }
        let provenanceWorker = statement.predicate.buildDefinition.internalParameters["worker_id"]
        guard provenanceWorker == certificate.workerID else {
            throw .init(.trust, "the worker certificate is for worker \(certificate.workerID), the provenance names \(provenanceWorker ?? "no worker")")
        }
        guard let finished = Timestamp.parse(statement.predicate.runDetails.metadata.finishedOn) else {
            throw .init(.payload, "provenance.json's finishedOn is not a timestamp")
        }
        try certificate.validity(covers: finished)
        guard (statement.predicate.runDetails.builder.builderDependencies ?? []) == certificate.image else {
            throw .init(.trust, "the provenance's builder dependencies (the worker image) differ from the image the worker certificate names")
        }
        report.keyTrust = .certified
        report.workerCertificate = .init(certificate, issuer: issuer)
        let image =
            certificate.image.isEmpty
            ? "no VM image (a process worker)" : "image " + certificate.image.map { "\($0.name ?? "?")=\($0.digest?["sha256"] ?? "?")" }.joined(separator: ", ")
        report.checks.append(
            .init(
                "trust", .pass,
                "the signing key \(signer.keyID) is certified by farm key \(issuer.keyID), which you pinned, for worker \(certificate.workerID) "
                    + "from \(certificate.notBefore) to \(certificate.notAfter); \(image)"))
    }
}
