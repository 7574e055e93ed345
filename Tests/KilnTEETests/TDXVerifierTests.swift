import Foundation
import KilnTEE
import Testing

@Suite struct TDXVerifierTests {
    let verifier = TDXVerifier(now: TEEVectors.now)

    static let quotes = ["tdx-v4-edgeless.dat", "tdx-v4-phala.dat", "tdx-v5-trustee.dat", "tdx-v4-gcp.json"]

    static func quote(_ name: String) -> [UInt8] { name.hasSuffix(".json") ? TEEVectors.gcpTDXQuote : TEEVectors.bytes(name) }

    @Test(arguments: quotes)
    func realQuotesAreHardwareVerified(name: String) throws {
        let a = try verifier.appraise(quote: Self.quote(name))
        #expect(a.verdict == .hardwareVerified)
        #expect(a.tee == "tdx")
        #expect(a.measurement.count == 96)
        #expect((0..<4).allSatisfy { a.registers["rtmr\($0)"]?.count == 96 })
        #expect(a.checks.map(\.name) == ["policy", "signature", "qe-binding", "pck-chain", "qe-report", "tcb-status"])
        #expect(a.attributes["version"] == (name.contains("v5") ? "5" : "4"))
    }

    @Test(arguments: quotes)
    func aFlippedByteInTheTDReportIsRefused(name: String) throws {
        let q = Self.quote(name)
        let bodyOffset = q[0] == 5 ? 54 : 48
        for offset in [bodyOffset + 136, bodyOffset + 520, 20] {  // MRTD, REPORTDATA, header user data
            #expect(throws: TEEVerificationError.self, "offset \(offset)") { try verifier.appraise(quote: TEEVectors.flipping(q, at: offset)) }
        }
    }

    @Test func aFlippedByteInTheQEReportOrItsSignatureIsRefused() throws {
        let q = TEEVectors.bytes("tdx-v4-edgeless.dat")
        let sigData = 48 + 584 + 4
        let qeReport = sigData + 64 + 64 + 6
        for (offset, check) in [
            (sigData + 10, "signature"), (sigData + 64 + 5, "signature"), (qeReport + 10, "qe-report"),
            (qeReport + 330, "qe-binding"), (qeReport + 384 + 3, "qe-report"),
        ] {
            do {
                _ = try verifier.appraise(quote: TEEVectors.flipping(q, at: offset))
                Issue.record("offset \(offset) verified")
            } catch {
                #expect(error.check == check, "offset \(offset): \(error)")
            }
        }
    }

    /// The quote with its PCK chain's last certificate replaced (lengths fixed up, signatures untouched).
    func replacingRoot(of q: [UInt8], with root: [UInt8]) throws -> [UInt8] {
        let parsed = try TDXQuote(q)
        let certs = try X509Certificate.pemChain(parsed.pckChainPEM)
        func pem(_ der: [UInt8]) -> String { "-----BEGIN CERTIFICATE-----\n" + Data(der).base64EncodedString() + "\n-----END CERTIFICATE-----\n" }
        let forged = Array((certs.dropLast().map { pem($0.der) } + [pem(root)]).joined().utf8)
        var spoiled = Array(q[..<parsed.pckChainDataOffset]) + [5, 0] + le32(forged.count) + forged
        let delta = spoiled.count - q.count
        patch(&spoiled, at: 48 + 584, add: delta)  // signature data length (v4)
        patch(&spoiled, at: 48 + 584 + 4 + 128 + 2, add: delta)  // QE certification data size
        return spoiled
    }

    @Test func aChainEndingAtIntelsDebugOnlyRootIsRefused() throws {
        let q = TEEVectors.bytes("tdx-v4-phala.dat")
        // The re-assembly itself is sound: with the real root put back, the quote still verifies.
        let production = TEEVectors.der(TEEVectors.text("intel-sgx-root-ca-production.pem"))
        #expect(try verifier.appraise(quote: try replacingRoot(of: q, with: production)).verdict == .hardwareVerified)
        for root in [TEEVectors.der(TEEVectors.text("intel-sgx-root-ca-debug-only.pem")), try AMDRootCertificates.ark(.milan).der] {
            do {
                _ = try verifier.appraise(quote: try replacingRoot(of: q, with: root))
                Issue.record("a foreign root verified")
            } catch let error as TEEVerificationError {
                #expect(error.check == "pck-chain", "\(error)")
            }
        }
    }

    @Test func truncatedQuotesAreRefusedWithoutTrapping() throws {
        let q = TEEVectors.bytes("tdx-v5-trustee.dat")
        for n in [0, 10, 47, 48, 600, 700, 1000, q.count - 1] {
            #expect(throws: TEEVerificationError.self, "length \(n)") { try verifier.appraise(quote: Array(q.prefix(n))) }
        }
        var huge = q
        huge.replaceSubrange(48 + 6 + 648..<48 + 6 + 648 + 4, with: [0xff, 0xff, 0xff, 0xff])
        #expect(throws: TEEVerificationError.self) { try verifier.appraise(quote: huge) }
    }

    private func trailingZeros(_ b: [UInt8]) -> Int { b.reversed().prefix { $0 == 0 }.count }
    private func le32(_ v: Int) -> [UInt8] { (0..<4).map { UInt8(truncatingIfNeeded: v >> (8 * $0)) } }
    private func patch(_ b: inout [UInt8], at offset: Int, add delta: Int) {
        let v = Int(b[offset]) | Int(b[offset + 1]) << 8 | Int(b[offset + 2]) << 16 | Int(b[offset + 3]) << 24
        b.replaceSubrange(offset..<offset + 4, with: le32(v + delta))
    }
}
