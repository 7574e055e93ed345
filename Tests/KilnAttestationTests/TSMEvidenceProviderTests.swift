import Foundation
import KilnAttestation
import KilnTEE
import KilnTestSupport
import NIOConcurrencyHelpers
import Testing

@Suite struct TSMEvidenceProviderTests {
    @Test func producesReportOverReportData() throws {
        let dir = try TemporaryDirectory()
        let fake = FakeTSM(root: dir.path, aux: Array("certs".utf8))
        defer { fake.stop() }
        let provider = TSMEvidenceProvider(root: dir.path)
        let reportData = (0..<64).map { UInt8($0) }
        let r = try provider.report(reportData: reportData)
        #expect(r.tee == "sev-snp")
        #expect(r.provider == "sev_guest")
        #expect(r.aux == Array("certs".utf8))
        #expect(r.report.map { Array($0[0x50..<0x90]) } == reportData)
        #expect(try FileManager.default.contentsOfDirectory(atPath: dir.path).isEmpty, "entry removed")
    }

    @Test func detectsRacingWriter() throws {
        let dir = try TemporaryDirectory()
        let fake = FakeTSM(root: dir.path, generationStep: 2)
        defer { fake.stop() }
        #expect(throws: TSMError.self) { try TSMEvidenceProvider(root: dir.path).report(reportData: [UInt8](repeating: 1, count: 64)) }
    }

    @Test func detectPicksTSMWhenPresent() throws {
        let dir = try TemporaryDirectory()
        #expect(EvidenceProviders.detect(tsmRoot: dir.path) is TSMEvidenceProvider)
        #expect(EvidenceProviders.detect(tsmRoot: dir.path + "/absent") is NoTEEEvidenceProvider)
    }

    @Test func aResultWithAnUnsignedTSMReportIsTEEUnverifiedAndRefusedByDefault() throws {
        let dir = try TemporaryDirectory()
        let fake = FakeTSM(root: dir.path)
        defer { fake.stop() }
        let f = try ResultRoundTripTests.make(provider: TSMEvidenceProvider(root: dir.path))
        let nonce = ResultRoundTripTests.nonce
        // The report binds the result, but no VCEK came with it: not hardware-verified.
        #expect { try ResultVerifier(trustedKeys: [f.key.publicKey], expectedNonce: nonce).verify(path: f.tarball) } throws: {
            let e = $0 as? VerificationError
            return e?.step == .tee && e?.message.contains("--allow-unverified-tee") == true
        }
        let lenient = ResultVerifier(options: .init(expectedNonce: nonce, trustedKeys: [f.key.publicKey], allowUnverifiedTEE: true))
        let report = try lenient.verify(path: f.tarball)
        #expect(report.tee == "sev-snp")
        #expect(report.verdict == .teeUnverified)
        #expect(report.keyTrust == .pinned)
        // Even with that allowance, the key must be pinned: an unverified report vouches for nothing.
        #expect { try ResultVerifier(options: .init(expectedNonce: nonce, allowUnverifiedTEE: true)).verify(path: f.tarball) } throws: {
            ($0 as? VerificationError)?.step == .trust
        }
        // With the chip's VCEK supplied, the zero signature is caught: the report is a forgery.
        var withVCEK = lenient.options
        withVCEK.sevCertificates.vcek = try X509Certificate.pemChain(TEEFixture.vcekPEM)[0].der
        withVCEK.now = TEEFixture.now
        #expect { try ResultVerifier(options: withVCEK).verify(path: f.tarball) } throws: {
            let e = $0 as? VerificationError
            return e?.step == .tee && e?.message.contains("signature") == true
        }
    }
}
