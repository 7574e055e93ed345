import Foundation
import KilnAttestation
import KilnTestSupport
import NIOConcurrencyHelpers
import Testing

/// A user-space stand-in for configfs-tsm: for each new report entry it creates the attribute files;
/// when 64 bytes land in `inblob` it writes an SEV-SNP-shaped `outblob` with those bytes at REPORT_DATA
/// (offset 0x50) and bumps `generation`, as the kernel does.
final class FakeTSM: @unchecked Sendable {
    let root: String
    private let stopped = NIOLockedValueBox(false)
    private let generationStep: Int
    private var thread: Thread?
    let reports = NIOLockedValueBox(0)

    init(root: String, generationStep: Int = 1) {
        self.root = root
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
                    fm.createFile(atPath: e + "/auxblob", contents: Data("certs".utf8))
                    fm.createFile(atPath: e + "/generation", contents: Data("0\n".utf8))
                    continue
                }
                guard let inblob = fm.contents(atPath: e + "/inblob").map(Array.init), inblob.count == 64, seen[name] != inblob else { continue }
                seen[name] = inblob
                var report = [UInt8](repeating: 0xEE, count: 1184)
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
        let fake = FakeTSM(root: dir.path)
        defer { fake.stop() }
        let provider = TSMEvidenceProvider(root: dir.path)
        let reportData = (0..<64).map { UInt8($0) }
        let r = try provider.report(reportData: reportData)
        #expect(r.tee == "sev-snp")
        #expect(r.provider == "sev_guest")
        #expect(r.aux == Array("certs".utf8))
        #expect(r.report.map { Array($0[0x50..<0x90]) } == reportData)
        #expect(TEEReport.contains(reportData: reportData, report: r.report!, tee: "sev-snp"))
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

    @Test func fullResultWithTSMVerifies() throws {
        let dir = try TemporaryDirectory()
        let fake = FakeTSM(root: dir.path)
        defer { fake.stop() }
        let f = try ResultRoundTripTests.make(provider: TSMEvidenceProvider(root: dir.path))
        let report = try ResultVerifier(trustedKeys: [f.key.publicKey], expectedNonce: ResultRoundTripTests.nonce).verify(path: f.tarball)
        #expect(report.tee == "sev-snp")
        // A report that does not carry this result's report_data is rejected.
        var evidence = try CanonicalJSON.decode(Evidence.self, from: f.output.evidence)
        var raw = Base64.decode(evidence.report!)!
        raw[0x50] ^= 1
        evidence.report = Data(raw).base64EncodedString()
        try Data(try CanonicalJSON.encode(evidence)).write(to: URL(fileURLWithPath: f.unpacked + "/evidence.json"))
        #expect { try ResultVerifier(trustedKeys: [f.key.publicKey], expectedNonce: ResultRoundTripTests.nonce).verify(path: f.unpacked) } throws: {
            ($0 as? VerificationError)?.step == .tee
        }
    }
}
