import Foundation
import KilnArchive
import KilnCore

/// Checks a rebuild's signed comparison (`kiln verify --rebuilt`), after `ResultVerifier` has passed
/// on the rebuild's result: the comparison must be signed by the very key that signed that result,
/// name this rebuild (job and nonce), and its rebuilt subjects must be exactly the result's verified
/// artifacts. Given the original result as well (verified on its own), its tarball digest and
/// artifacts must be the ones the comparison names — so "identical" means identical to *that* result.
public struct RebuildComparisonVerifier: Sendable {
    public init() {}

    /// - Parameters:
    ///   - root: the unpacked rebuild result (read through the confined view only).
    ///   - report: `ResultVerifier`'s passing report on that same result.
    public func verify(root: ConfinedDirectory, report: VerificationReport, expectedNonce: String) throws(VerificationError) -> RebuildComparison {
        guard report.ok, let fingerprint = report.keyFingerprint else { throw .init(.comparison, "the rebuild result itself did not verify") }
        let envelopeBytes: [UInt8]
        let evidenceBytes: [UInt8]
        do {
            envelopeBytes = try root.openFile(RebuildComparison.resultPath, maxBytes: 16 << 20).readAll()
            evidenceBytes = try root.openFile("evidence.json", maxBytes: 16 << 20).readAll()
        } catch {
            throw .init(.comparison, "this result carries no \(RebuildComparison.resultPath): it is not a rebuild (\(error))")
        }
        // The key that signed the result is the one its evidence binds; the verifier already checked it is trusted.
        guard let evidence = try? JSONDecoder().decode(Evidence.self, from: Data(evidenceBytes)),
            let raw = Hex.decode(evidence.binding.publicKey), let key = try? PublicKey(raw: raw), key.keyID == fingerprint
        else { throw .init(.comparison, "cannot find the key that signed this result") }
        guard let envelope = try? JSONDecoder().decode(DSSEEnvelope.self, from: Data(envelopeBytes)) else {
            throw .init(.comparison, "\(RebuildComparison.resultPath) is not a DSSE envelope")
        }
        let payload: [UInt8]
        do { payload = try envelope.verify(trustedKeys: [key]).payload } catch {
            throw .init(.comparison, "the comparison is not signed by the key that signed this result: \(error)")
        }
        guard let statement = try? JSONDecoder().decode(ComparisonStatement.self, from: Data(payload)),
            statement.type == Statement.type, statement.predicateType == RebuildComparison.predicateType
        else { throw .init(.comparison, "the comparison is not an in-toto statement of type \(RebuildComparison.predicateType)") }
        let comparison = statement.predicate
        guard comparison.rebuildBuildID == report.jobID else {
            throw .init(.comparison, "the comparison is for job \(comparison.rebuildBuildID), this result is job \(report.jobID ?? "?")")
        }
        guard comparison.nonce == expectedNonce else { throw .init(.comparison, "the comparison names nonce \(comparison.nonce), not \(expectedNonce)") }
        guard statement.subject == comparison.statement().subject else { throw .init(.comparison, "the statement's subjects do not match its predicate") }
        var rebuilt: [String: String] = [:]
        for a in comparison.artifacts { if let r = a.rebuilt { rebuilt[a.name] = r.sha256 } }
        guard rebuilt == report.artifacts else {
            throw .init(.comparison, "the comparison's rebuilt artifacts are not this result's artifacts")
        }
        let recomputed = comparison.artifacts.allSatisfy { $0.verdict == .identical } && !comparison.artifacts.isEmpty
        guard recomputed == comparison.reproducible,
            comparison.artifacts.allSatisfy({ ($0.verdict == .identical) == ($0.original != nil && $0.original == $0.rebuilt) })
        else { throw .init(.comparison, "the comparison's verdicts contradict its digests") }
        return comparison
    }

    /// The original result is the one compared with: same tarball digest, same artifacts.
    public func checkOriginal(_ comparison: RebuildComparison, tarballSha256: String, report: VerificationReport) throws(VerificationError) {
        guard report.ok else { throw .init(.comparison, "the original result did not verify: \(report.error ?? "")") }
        guard tarballSha256 == comparison.originalResultSha256 else {
            throw .init(.comparison, "the rebuild was compared with result \(comparison.originalResultSha256), not this one (\(tarballSha256))")
        }
        guard report.jobID == comparison.originalBuildID else {
            throw .init(.comparison, "the comparison names original job \(comparison.originalBuildID), this is \(report.jobID ?? "?")")
        }
        var original: [String: String] = [:]
        for a in comparison.artifacts { if let o = a.original { original[a.name] = o.sha256 } }
        guard original == report.artifacts else { throw .init(.comparison, "the original's artifacts are not the ones the comparison names") }
    }
}
