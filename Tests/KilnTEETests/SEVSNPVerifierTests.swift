import Foundation
import KilnTEE
import Testing

@Suite struct SEVSNPVerifierTests {
    let report = TEEVectors.bytes("sev-gcp.bin")
    var table: SEVCertificateTable {
        SEVCertificateTable(
            vcek: TEEVectors.der(TEEVectors.text("sev-gcp-vcek.pem")),
            ask: TEEVectors.der(TEEVectors.text("sev-gcp-cert-chain.pem"), index: 0),
            ark: TEEVectors.der(TEEVectors.text("sev-gcp-cert-chain.pem"), index: 1))
    }
    let verifier = SEVSNPVerifier(now: TEEVectors.now)

    func expectRefused(_ check: String, _ body: () throws(TEEVerificationError) -> TEEAppraisal) {
        do {
            let a = try body()
            Issue.record("accepted (\(a.verdict)) but should fail at \(check)")
        } catch {
            #expect(error.check == check, "\(error)")
        }
    }

    @Test func aRealMilanReportWithItsChainIsHardwareVerified() throws {
        let a = try verifier.appraise(report: report, evidenceTable: table)
        #expect(a.verdict == .hardwareVerified)
        #expect(a.tee == "sev-snp")
        #expect(a.reportData == String(repeating: "0", count: 128))
        #expect(a.measurement.count == 96)
        #expect(a.tcb == ["bootloader": "4", "tee": "0", "snp": "27", "microcode": "222"])
        #expect(a.attributes["product"] == "Milan")
        #expect(a.checks.map(\.name) == ["policy", "vcek-chain", "signature", "tcb", "chip-id", "revocation"])
    }

    @Test func theVCEKAloneSufficesBecauseTheASKAndARKArePinned() throws {
        let a = try verifier.appraise(report: report, evidenceTable: SEVCertificateTable(vcek: table.vcek))
        #expect(a.verdict == .hardwareVerified)
        // The certificate table a host hands its guest round-trips through its encoding.
        let parsed = try SEVCertificateTable(parsing: table.encoded())
        #expect(parsed.vcek == table.vcek && parsed.ask == table.ask && parsed.ark == table.ark)
        #expect(try SEVSNPVerifier(supplied: parsed, now: TEEVectors.now).appraise(report: report, evidenceTable: nil).verdict == .hardwareVerified)
    }

    @Test func withoutAVCEKTheReportIsOnlyParsedAndSaysSo() throws {
        let a = try verifier.appraise(report: report, evidenceTable: nil)
        #expect(a.verdict == .chainUnavailable)
        #expect(a.checks.contains { $0.name == "signature" && $0.outcome == .skipped && $0.detail.contains("--vcek") })
    }

    @Test(arguments: [0x50, 0x90, 0x180, 0x29F, 0x2A0, 0x2E8])
    func oneFlippedByteIsRefused(offset: Int) {
        let spoiled = TEEVectors.flipping(report, at: offset)
        do {
            _ = try verifier.appraise(report: spoiled, evidenceTable: table)
            Issue.record("a report with byte 0x\(String(offset, radix: 16)) flipped verified")
        } catch {
            #expect(["signature", "tcb"].contains(error.check), "\(error)")
        }
    }

    @Test func aSwappedVCEKIsRefused() throws {
        // Another certificate in the VCEK's place: AMD's ASK (wrong issuer), or Genoa's ASK.
        for other in [table.ask!, TEEVectors.der(AMDRootCertificates.chain(.genoa))] {
            var swapped = table
            swapped.vcek = other
            expectRefused("vcek-chain") { () throws(TEEVerificationError) in try verifier.appraise(report: report, evidenceTable: swapped) }
        }
        // The other vector's VCEK is the same chip's key (reissued): it verifies, as it should.
        var reissued = table
        reissued.vcek = TEEVectors.der(TEEVectors.text("sev-gcp-x25519-vcek.pem"))
        #expect(try verifier.appraise(report: report, evidenceTable: reissued).verdict == .hardwareVerified)
    }

    @Test func aChainWhoseARKIsNotAMDsIsRefused() {
        var wrong = table
        wrong.ark = TEEVectors.der(TEEVectors.text("intel-sgx-root-ca-debug-only.pem"))
        expectRefused("ark") { () throws(TEEVerificationError) in try verifier.appraise(report: report, evidenceTable: wrong) }
        var wrongASK = table
        wrongASK.ask = TEEVectors.der(AMDRootCertificates.chain(.genoa), index: 0)
        expectRefused("ask") { () throws(TEEVerificationError) in try verifier.appraise(report: report, evidenceTable: wrongASK) }
    }

    @Test func aVCEKPassedOffAsAnASKIsRefused() {
        var wrong = table
        wrong.ask = table.vcek
        expectRefused("ask") { () throws(TEEVerificationError) in try verifier.appraise(report: report, evidenceTable: wrong) }
    }

    @Test func expiredCertificatesAreRefused() {
        let later = SEVSNPVerifier(now: ISO8601DateFormatter().date(from: "2040-01-01T00:00:00Z")!)
        expectRefused("validity") { () throws(TEEVerificationError) in try later.appraise(report: report, evidenceTable: table) }
    }

    @Test func aReportFromVMPL1IsRefusedByDefault() throws {
        let other = TEEVectors.bytes("sev-gcp-x25519-bound.bin")
        let chain = TEEVectors.text("sev-gcp-x25519-cert-chain.pem")
        let t = SEVCertificateTable(vcek: TEEVectors.der(TEEVectors.text("sev-gcp-x25519-vcek.pem")), ask: TEEVectors.der(chain), ark: TEEVectors.der(chain, index: 1))
        expectRefused("policy") { () throws(TEEVerificationError) in try verifier.appraise(report: other, evidenceTable: t) }
        let lenient = SEVSNPVerifier(policy: .init(maxVMPL: 1), now: TEEVectors.now)
        let a = try lenient.appraise(report: other, evidenceTable: t)
        #expect(a.verdict == .hardwareVerified)
        #expect(a.reportData.hasPrefix("3a6753fd"))
    }

    @Test func aDebuggableGuestIsRefusedEvenUnsigned() {
        var debug = report
        debug[0x0A] |= 0x08  // policy bit 19
        expectRefused("policy") { () throws(TEEVerificationError) in try verifier.appraise(report: debug, evidenceTable: nil) }
    }

    @Test func truncatedAndMalformedReportsAndTablesAreRefused() {
        expectRefused("report") { () throws(TEEVerificationError) in try verifier.appraise(report: Array(report.prefix(1000)), evidenceTable: nil) }
        var badAlgo = report
        badAlgo[0x34] = 2
        expectRefused("report") { () throws(TEEVerificationError) in try verifier.appraise(report: badAlgo, evidenceTable: nil) }
        var table = self.table.encoded()
        table[16] = 0xff
        table[17] = 0xff
        table[18] = 0xff
        table[19] = 0x7f  // first entry's offset
        #expect(throws: TEEVerificationError.self) { try SEVCertificateTable(parsing: table) }
        #expect(throws: TEEVerificationError.self) { try SEVCertificateTable(parsing: [UInt8](repeating: 1, count: 30)) }
    }
}
