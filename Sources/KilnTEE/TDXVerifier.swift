import Crypto
import Foundation

/// Checks a TDX quote offline: the quote's ECDSA P-256 signature by the attestation key; the QE
/// report signed by the PCK certificate's key; the QE report data binding the attestation key
/// (SHA-256 of key ‖ QE authentication data); the PCK chain up to the pinned Intel SGX Root CA; and
/// that the TD is not debuggable. The TCB level of the platform and the QE identity need Intel's
/// collateral (TCB info, QE identity, CRLs), which is online: those are reported as not checked.
public struct TDXVerifier: Sendable {
    public var now: Date
    public var allowDebug: Bool

    public init(now: Date = Date(), allowDebug: Bool = false) {
        self.now = now
        self.allowDebug = allowDebug
    }

    public func appraise(quote bytes: [UInt8]) throws(TEEVerificationError) -> TEEAppraisal {
        let quote = try TDXQuote(bytes)
        var checks: [TEEAppraisal.Check] = []
        if quote.debug, !allowDebug {
            throw .init("policy", "the TD is debuggable (TDATTRIBUTES 0x\(String(quote.tdAttributes, radix: 16))): the host can read its state")
        }
        checks.append(.init("policy", .pass, "TD not debuggable"))

        guard let attestationKey = try? P256.Signing.PublicKey(rawRepresentation: quote.attestationKey),
            let signature = try? P256.Signing.ECDSASignature(rawRepresentation: quote.signature),
            attestationKey.isValidSignature(signature, for: SHA256.hash(data: quote.signedBytes))
        else {
            throw .init("signature", "the quote's ECDSA P-256 signature does not verify with its attestation key")
        }
        checks.append(.init("signature", .pass, "ECDSA P-256 by the attestation key over header and TD report"))

        var binding = SHA256()
        binding.update(data: quote.attestationKey)
        binding.update(data: quote.qeAuthenticationData)
        guard Array(binding.finalize()) + [UInt8](repeating: 0, count: 32) == quote.qeReportData else {
            throw .init("qe-binding", "the QE report does not vouch for this attestation key")
        }
        checks.append(.init("qe-binding", .pass, "QE report data = SHA-256(attestation key ‖ QE authentication data)"))

        let chain = try X509Certificate.pemChain(quote.pckChainPEM)
        guard chain.count >= 2, chain.count <= 5 else { throw .init("pck-chain", "the PCK chain has \(chain.count) certificates") }
        let root = try IntelRootCertificate.certificate()
        guard chain.last! == root else { throw .init("pck-chain", "the PCK chain does not end at the pinned Intel SGX Root CA") }
        for i in 0..<chain.count {
            let issuer = i + 1 < chain.count ? chain[i + 1] : root
            guard try chain[i].isSigned(by: issuer) else {
                throw .init("pck-chain", "'\(chain[i].subjectName)' is not signed by '\(issuer.subjectName)'")
            }
            guard chain[i].isValid(at: now) else {
                throw .init("validity", "'\(chain[i].subjectName)' is valid from \(chain[i].notBefore) to \(chain[i].notAfter), not at \(now)")
            }
        }
        checks.append(.init("pck-chain", .pass, chain.map(\.subjectName).joined(separator: " ← ") + " (pinned root)"))

        guard case .p256(let pck) = try chain[0].publicKey,
            let qeSignature = try? P256.Signing.ECDSASignature(rawRepresentation: quote.qeReportSignature),
            pck.isValidSignature(qeSignature, for: SHA256.hash(data: quote.qeReport))
        else {
            throw .init("qe-report", "the QE report is not signed by the PCK certificate's key")
        }
        checks.append(.init("qe-report", .pass, "QE report signed by the PCK key"))
        checks.append(.init("tcb-status", .skipped, "the platform's TCB level, the QE identity and revocation need Intel's collateral (online); not checked"))

        var registers = ["mrseam": HexText.of(quote.mrSeam), "mrconfigid": HexText.of(quote.mrConfigID), "mrowner": HexText.of(quote.mrOwner)]
        for i in 0..<4 { registers["rtmr\(i)"] = HexText.of(quote.rtmr(i)) }
        return TEEAppraisal(
            tee: "tdx", verdict: .hardwareVerified, reportData: HexText.of(quote.reportData), measurement: HexText.of(quote.mrTD),
            registers: registers, tcb: ["tee_tcb_svn": HexText.of(quote.teeTCBSVN)],
            attributes: [
                "version": "\(quote.version)", "td_attributes": "0x" + String(quote.tdAttributes, radix: 16),
                "xfam": "0x" + String(quote.xfam, radix: 16), "debug": "\(quote.debug)",
            ],
            checks: checks)
    }
}
