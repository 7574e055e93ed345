import KilnTEE

extension ResultVerifier {
    /// Checks the hardware report the claims name and decides the verdict. A report that is wrong
    /// (bad signature, foreign chain, debug guest, another result's report_data) is always refused;
    /// one whose chain cannot be checked, or no report at all, only when the user allows it.
    func appraiseTEE(
        claims: EvidenceClaims, report: [UInt8]?, aux: [UInt8]?, reportData: String,
        into result: inout VerificationReport
    ) throws(VerificationError) -> VerificationReport.Verdict {
        let appraisal: TEEAppraisal
        switch claims.tee {
        case "none":
            guard report == nil else { throw .init(.tee, "tee 'none' with a report attached") }
            guard options.allowTEENone else {
                throw .init(.tee, "evidence has tee 'none': only the farm key vouches for it; pass --allow-tee-none to accept that")
            }
            result.checks.append(.init("tee", .skipped, "no TEE report: only the farm key vouches for this result (--allow-tee-none)"))
            return .noTEE
        case "sev-snp", "tdx":
            guard let report else { throw .init(.tee, "evidence claims tee '\(claims.tee)' but carries no report") }
            do {
                if claims.tee == "sev-snp" {
                    let table = try aux.map { a throws(TEEVerificationError) in try SEVCertificateTable(parsing: a) }
                    appraisal = try SEVSNPVerifier(policy: options.sevPolicy, supplied: options.sevCertificates, now: options.now)
                        .appraise(report: report, evidenceTable: table)
                } else {
                    appraisal = try TDXVerifier(now: options.now).appraise(quote: report)
                }
            } catch {
                throw .init(.tee, "the \(claims.tee) report is refused at \(error.check): \(error.message)")
            }
        default:
            throw .init(.tee, "unknown tee '\(claims.tee)': only none, sev-snp and tdx are understood")
        }
        result.record(appraisal)
        guard appraisal.reportData == reportData else {
            throw .init(
                .tee,
                "the \(claims.tee) report carries report_data \(appraisal.reportData.prefix(16))…, not this result's binding \(reportData.prefix(16))…: it attests another result"
            )
        }
        switch appraisal.verdict {
        case .hardwareVerified:
            result.checks.append(.init("tee", .pass, "the \(claims.tee) report is hardware-verified and binds this result"))
            return .hardwareVerified
        case .chainUnavailable:
            guard options.allowUnverifiedTEE else {
                let why = appraisal.checks.first { $0.outcome == .skipped }?.detail ?? "its chain could not be checked"
                throw .init(.tee, "a \(claims.tee) report binds this result, but it is not verified: \(why); pass --allow-unverified-tee to accept that")
            }
            result.checks.append(.init("tee", .skipped, "the \(claims.tee) report binds this result, but its chain was not checked (--allow-unverified-tee)"))
            return .teeUnverified
        }
    }
}
