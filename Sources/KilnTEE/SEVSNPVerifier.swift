import Crypto
import Foundation
import SwiftASN1

/// Checks a SEV-SNP report offline: the report's ECDSA P-384 signature with the VCEK, the VCEK
/// against the ASK and the ASK against AMD's pinned ARK (RSA-PSS, SHA-384), the TCB the VCEK was
/// issued for against the TCB the report states, the chip id, and the guest policy (no debug, VMPL
/// at most `maxVMPL`). Revocation (AMD's CRL) needs the network and is reported as not checked.
public struct SEVSNPVerifier: Sendable {
    public struct Policy: Sendable {
        /// The highest VMPL a report may come from; 0 means the guest's most privileged level, which
        /// is where a guest kernel (and so Kiln's worker) asks for reports.
        public var maxVMPL: UInt32
        public var allowDebug: Bool

        public init(maxVMPL: UInt32 = 0, allowDebug: Bool = false) {
            self.maxVMPL = maxVMPL
            self.allowDebug = allowDebug
        }
    }

    public var policy: Policy
    /// Certificates the user supplied (`--vcek`, `--amd-chain`): used before the evidence's own.
    public var supplied: SEVCertificateTable
    /// Validity periods are checked at this time.
    public var now: Date

    public init(policy: Policy = .init(), supplied: SEVCertificateTable = .init(), now: Date = Date()) {
        self.policy = policy
        self.supplied = supplied
        self.now = now
    }

    // VCEK extension OIDs (AMD "Versioned Chip Endorsement Key" spec).
    static let tcbOIDs: [(String, String)] = [
        ("bootloader", "1.3.6.1.4.1.3704.1.3.1"), ("tee", "1.3.6.1.4.1.3704.1.3.2"), ("snp", "1.3.6.1.4.1.3704.1.3.3"),
        ("microcode", "1.3.6.1.4.1.3704.1.3.8"), ("fmc", "1.3.6.1.4.1.3704.1.3.9"),
    ]
    static let hwidOID = "1.3.6.1.4.1.3704.1.4"

    /// - Parameter evidenceTable: the certificate table shipped with the evidence (configfs-tsm `auxblob`), if any.
    public func appraise(report bytes: [UInt8], evidenceTable: SEVCertificateTable?) throws(TEEVerificationError) -> TEEAppraisal {
        let report = try SEVSNPReport(bytes)
        var checks: [TEEAppraisal.Check] = []
        if report.debugAllowed, !policy.allowDebug {
            throw .init("policy", "the guest policy allows debugging (policy 0x\(String(report.policy, radix: 16))): the host can read its memory")
        }
        guard report.vmpl <= policy.maxVMPL else {
            throw .init("policy", "the report comes from VMPL \(report.vmpl); at most VMPL \(policy.maxVMPL) is accepted")
        }
        checks.append(.init("policy", .pass, "debug off, VMPL \(report.vmpl)"))

        var appraisal = TEEAppraisal(
            tee: "sev-snp", verdict: .chainUnavailable, reportData: HexText.of(report.reportData), measurement: HexText.of(report.measurement),
            registers: ["host_data": HexText.of(report.hostData), "id_key_digest": HexText.of(report.idKeyDigest)],
            tcb: SEVSNPReport.TCB(report.reportedTCB, product: .milan).fields,
            attributes: [
                "version": "\(report.version)", "policy": "0x" + String(report.policy, radix: 16), "vmpl": "\(report.vmpl)",
                "guest_svn": "\(report.guestSVN)", "debug": "\(report.debugAllowed)",
            ],
            checks: checks)

        guard report.signingKeyIsVCEK else {
            appraisal.checks.append(.init("signature", .skipped, "the report is signed by a VLEK, which this verifier cannot check offline"))
            return appraisal
        }
        guard let vcekDER = supplied.vcek ?? evidenceTable?.vcek else {
            appraisal.checks.append(
                .init("signature", .skipped, "no VCEK: the evidence carries no certificate table; give --vcek (AMD's key service serves it for this chip and TCB)"))
            return appraisal
        }
        let vcek = try X509Certificate(der: vcekDER)
        guard let product = AMDProduct(issuerName: vcek.issuerName) else {
            throw .init("vcek-chain", "the VCEK is issued by '\(vcek.issuerName)', not by a known AMD SEV CA")
        }

        // ARK: always the pinned one; a supplied ARK must be exactly it.
        let ark = try AMDRootCertificates.ark(product)
        if let given = supplied.ark ?? evidenceTable?.ark, given != ark.der {
            throw .init("ark", "the chain's ARK is not AMD's pinned ARK-\(product.rawValue)")
        }
        guard try ark.isSigned(by: ark) else { throw .init("ark", "the pinned ARK-\(product.rawValue) does not verify itself") }
        let ask: X509Certificate
        if let given = supplied.ask ?? evidenceTable?.ask { ask = try X509Certificate(der: given) } else { ask = try AMDRootCertificates.ask(product) }
        guard try ask.isSigned(by: ark) else { throw .init("ask", "the ASK '\(ask.subjectName)' is not signed by AMD's ARK-\(product.rawValue)") }
        guard try vcek.isSigned(by: ask) else { throw .init("vcek-chain", "the VCEK is not signed by the ASK '\(ask.subjectName)'") }
        for cert in [ark, ask, vcek] where !cert.isValid(at: now) {
            throw .init("validity", "'\(cert.subjectName)' is valid from \(cert.notBefore) to \(cert.notAfter), not at \(now)")
        }
        checks.append(.init("vcek-chain", .pass, "VCEK ← \(ask.subjectName) ← pinned ARK-\(product.rawValue) (RSA-PSS SHA-384), all valid now"))

        guard case .p384(let key) = try vcek.publicKey else { throw .init("vcek-chain", "the VCEK's key is not P-384") }
        guard let signature = Self.signature(report), key.isValidSignature(signature, for: SHA384.hash(data: report.signedBytes)) else {
            throw .init("signature", "the report's ECDSA P-384 signature does not verify with the VCEK")
        }
        checks.append(.init("signature", .pass, "ECDSA P-384 / SHA-384 by the VCEK"))

        let tcb = SEVSNPReport.TCB(report.reportedTCB, product: product)
        let reported = tcb.fields
        for (name, oid) in Self.tcbOIDs {
            guard let value = vcek.extensions[oid] else { continue }
            guard let n = Self.integer(value), reported[name] == "\(n)" else {
                throw .init(
                    "tcb", "the VCEK was issued for \(name) SPL \(Self.integer(value).map(String.init) ?? "?"); the report's reported TCB has \(reported[name] ?? "none")"
                )
            }
        }
        checks.append(
            .init("tcb", .pass, "the VCEK's TCB equals the reported TCB " + reported.sorted { $0.key < $1.key }.map { "\($0.key)=\($0.value)" }.joined(separator: " ")))
        if report.chipIDMasked {
            checks.append(.init("chip-id", .skipped, "the report masks its chip id"))
        } else if let hwid = vcek.extensions[Self.hwidOID] {
            guard Self.octets(hwid) == report.chipID else { throw .init("chip-id", "the VCEK belongs to another chip than the report's CHIP_ID") }
            checks.append(.init("chip-id", .pass, "the VCEK's hwID equals the report's CHIP_ID"))
        }
        checks.append(.init("revocation", .skipped, "AMD's CRL is online; not checked"))
        appraisal.verdict = .hardwareVerified
        appraisal.tcb = reported
        appraisal.attributes["product"] = product.rawValue
        appraisal.checks = checks
        return appraisal
    }

    /// r and s are 72-byte little-endian fields; P-384 needs 48 big-endian bytes each, the rest zero.
    static func signature(_ report: SEVSNPReport) -> P384.Signing.ECDSASignature? {
        let r = report.signatureR
        let s = report.signatureS
        guard r[48...].allSatisfy({ $0 == 0 }), s[48...].allSatisfy({ $0 == 0 }) else { return nil }
        // Malformed r/s: no signature, and the report fails verification.
        return try? P384.Signing.ECDSASignature(rawRepresentation: Array(r[0..<48].reversed()) + Array(s[0..<48].reversed()))
    }

    static func integer(_ der: [UInt8]) -> Int? {
        guard let node = try? DER.parse(der) else { return nil }
        // Not an integer: the extension is treated as absent and its check fails.
        return try? Int(derEncoded: node)
    }

    static func octets(_ der: [UInt8]) -> [UInt8] {
        if let node = try? DER.parse(der), let o = try? ASN1OctetString(derEncoded: node) { return Array(o.bytes) }
        return der
    }
}
