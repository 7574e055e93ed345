import Foundation
import KilnAttestation
import KilnTEE
import KilnTestSupport
import NIOConcurrencyHelpers
import Testing

/// A user-space stand-in for configfs-tsm: for each new report entry it creates the attribute files;
/// when 64 bytes land in `inblob` it writes an SEV-SNP-shaped `outblob` (version 5, ECDSA P-384,
/// VMPL 0, no debug) with those bytes at REPORT_DATA (offset 0x50) and bumps `generation`, as the
/// kernel does. Its signature is zeros: no AMD key signed it, which is what a verifier must notice.
final class FakeTSM: @unchecked Sendable {
    let root: String
    private let stopped = NIOLockedValueBox(false)
    private let generationStep: Int
    private var thread: Thread?
    let reports = NIOLockedValueBox(0)

    let aux: [UInt8]

    init(root: String, generationStep: Int = 1, aux: [UInt8] = []) {
        self.root = root
        self.aux = aux
        self.generationStep = generationStep
        let t = Thread { [self] in self.loop() }
        thread = t
        t.start()
    }

    func stop() { stopped.withLockedValue { $0 = true } }

    private func loop() {
        var seen: [String: [UInt8]] = [:]
        var initialised = Set<String>()
        let fm = FileManager.default
        while !stopped.withLockedValue({ $0 }) {
            for name in (try? fm.contentsOfDirectory(atPath: root)) ?? [] {
                let e = root + "/" + name
                if !initialised.contains(name) {
                    initialised.insert(name)
                    fm.createFile(atPath: e + "/inblob", contents: Data())
                    fm.createFile(atPath: e + "/outblob", contents: Data())
                    fm.createFile(atPath: e + "/provider", contents: Data("sev_guest\n".utf8))
                    fm.createFile(atPath: e + "/auxblob", contents: Data(aux))
                    fm.createFile(atPath: e + "/generation", contents: Data("0\n".utf8))
                    continue
                }
                guard let inblob = fm.contents(atPath: e + "/inblob").map(Array.init), inblob.count == 64, seen[name] != inblob else { continue }
                seen[name] = inblob
                var report = [UInt8](repeating: 0, count: 1184)
                report[0] = 5
                report[0x08] = 0x00; report[0x09] = 0x00; report[0x0A] = 0x03  // policy 0x30000
                report[0x34] = 1
                report[0x50..<0x90] = inblob[...]
                fm.createFile(atPath: e + "/outblob", contents: Data(report))
                let g = Int(String(decoding: fm.contents(atPath: e + "/generation") ?? Data("0".utf8), as: UTF8.self)
                    .trimmingCharacters(in: .whitespacesAndNewlines)) ?? 0
                fm.createFile(atPath: e + "/generation", contents: Data("\(g + generationStep)\n".utf8))
                reports.withLockedValue { $0 += 1 }
            }
            usleep(500)
        }
    }
}

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
