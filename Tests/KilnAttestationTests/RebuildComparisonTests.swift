import Foundation
import KilnArchive
import KilnAttestation
import KilnCore
import KilnTestSupport
import Testing

/// #14 item 1: where two builds of a file differ (ELF sections from untrusted bytes), and what
/// `kiln verify --rebuilt` accepts as a comparison.
@Suite struct ELFSectionTableTests {
    static let binary = Array(FileManager.default.contents(atPath: "/bin/true") ?? Data())

    @Test func aRealBinaryHasItsSections() throws {
        let table = try #require(ELFSectionTable(Self.binary))
        let names = table.sections.map(\.name)
        #expect(names.contains(".text") && names.contains(".rodata") && names.contains(".shstrtab"), "\(names)")
    }

    @Test func aByteFlippedInTextIsReportedAsTextAlone() throws {
        let text = try #require(ELFSectionTable(Self.binary)?.sections.first { $0.name == ".text" })
        var changed = Self.binary
        changed[text.offset + text.size / 2] ^= 0xFF
        #expect(ELFSectionTable.differingSections(original: Self.binary, rebuilt: changed) == [".text"])
        let artifact = RebuildComparison.compare(name: "artifacts/true", original: Self.binary, rebuilt: changed)
        #expect(artifact.verdict == .different && artifact.firstDifferenceOffset == Int64(text.offset + text.size / 2))
        #expect(artifact.differingSections == [".text"])
        #expect(RebuildComparison.compare(name: "x", original: Self.binary, rebuilt: Self.binary).verdict == .identical)
        #expect(RebuildComparison.compare(name: "x", original: [1, 2, 3], rebuilt: [1, 2, 4]).differingSections == nil, "not ELF: no sections")
    }

    /// Truncated and mutated headers: nil or a table, never a crash or an out-of-range read.
    @Test func hostileHeadersNeverCrash() {
        for length in stride(from: 0, to: min(Self.binary.count, 70_000), by: 97) { _ = ELFSectionTable(Array(Self.binary.prefix(length))) }
        var generator = SystemRandomNumberGenerator()
        let table = ELFSectionTable(Self.binary)
        let shoff = Int(Self.binary[0x28]) | Int(Self.binary[0x29]) << 8 | Int(Self.binary[0x2A]) << 16 | Int(Self.binary[0x2B]) << 24
        for _ in 0..<3000 {
            var mutated = Self.binary
            for _ in 0..<4 {
                // Mostly the ELF header and the section headers, where the offsets live.
                let region = Bool.random(using: &generator) ? 0..<64 : shoff..<min(Self.binary.count, shoff + 64 * (table?.sections.count ?? 1))
                mutated[Int.random(in: region, using: &generator)] = UInt8.random(in: 0...255, using: &generator)
            }
            _ = ELFSectionTable.differingSections(original: Self.binary, rebuilt: mutated)
        }
        var huge = Self.binary
        for i in 0x28..<0x30 { huge[i] = 0xFF }  // e_shoff = 2^64 - 1
        #expect(ELFSectionTable(huge) == nil)
    }
}

@Suite struct RebuildComparisonVerifierTests {
    static let nonce = "00112233445566778899aabbccddeeff"

    struct Made {
        let dir: TemporaryDirectory
        let key: SigningKey
        let unpacked: String
    }

    /// A rebuild result of one artifact whose comparison is `comparison(rebuiltBytes)`, signed with `comparisonKey`.
    static func make(
        comparisonKey: SigningKey? = nil, jobID: String = "jrebuild", _ comparison: ([UInt8]) -> RebuildComparison
    ) throws -> Made {
        let dir = try TemporaryDirectory()
        let key = SigningKey()
        let fm = FileManager.default
        try fm.createDirectory(atPath: dir.file("art"), withIntermediateDirectories: true)
        let bytes = Array("the rebuilt binary".utf8)
        try fm.writeFile(atPath: dir.file("art/hello"), contents: Data(bytes))
        let document = try comparison(bytes).signed(with: comparisonKey ?? key)
        var inputs = ResultRoundTripTests.inputs(jobID: jobID)
        inputs.nonce = nonce
        inputs.externalParameters.nonce = nonce
        inputs.manifestInputs.nonce = nonce
        _ = try ResultBuilder(key: key, evidenceProvider: NoTEEEvidenceProvider()).build(
            artifactsDirectory: dir.file("art"), buildConfig: [:], attachments: [RebuildComparison.resultPath: document], inputs: inputs,
            output: dir.file("r.tar.gz"))
        try fm.createDirectory(atPath: dir.file("u"), withIntermediateDirectories: true)
        _ = try ArchiveExtractor().extract(archivePath: dir.file("r.tar.gz"), into: dir.file("u"))
        return Made(dir: dir, key: key, unpacked: dir.file("u"))
    }

    static func honest(_ rebuilt: [UInt8], original: [UInt8]? = nil) -> RebuildComparison {
        let artifact = RebuildComparison.compare(name: "artifacts/hello", original: original ?? rebuilt, rebuilt: rebuilt)
        return RebuildComparison(
            originalBuildID: "joriginal", originalResultSha256: String(repeating: "ab", count: 32), rebuildBuildID: "jrebuild", nonce: nonce,
            reproducible: artifact.verdict == .identical, artifacts: [artifact])
    }

    func check(_ made: Made) throws -> RebuildComparison {
        let report = try ResultVerifier(trustedKeys: [made.key.publicKey], expectedNonce: Self.nonce, allowTEENone: true).verify(path: made.unpacked)
        return try RebuildComparisonVerifier().verify(root: try ConfinedDirectory(path: made.unpacked), report: report, expectedNonce: Self.nonce)
    }

    func expectRefused(_ made: Made, _ text: String) {
        do {
            _ = try check(made)
            Issue.record("a forged comparison was accepted")
        } catch let error as VerificationError {
            #expect(error.step == .comparison && error.message.contains(text), "\(error)")
        } catch {
            Issue.record("\(error)")
        }
    }

    @Test func anHonestComparisonVerifies() throws {
        let c = try check(try Self.make { Self.honest($0) })
        #expect(c.reproducible && c.artifacts.map(\.name) == ["artifacts/hello"])
        let different = try check(try Self.make { Self.honest($0, original: Array("another binary".utf8)) })
        #expect(!different.reproducible && different.differingArtifacts == ["artifacts/hello"])
    }

    @Test func forgedComparisonsAreRefused() throws {
        expectRefused(try Self.make(comparisonKey: SigningKey()) { Self.honest($0) }, "not signed by the key that signed this result")
        expectRefused(
            try Self.make { bytes in
                var c = Self.honest(bytes, original: Array("another binary".utf8))
                c.reproducible = true  // claims reproduced while the digests differ
                return c
            }, "contradict")
        expectRefused(
            try Self.make { bytes in
                var c = Self.honest(bytes)
                c.artifacts[0].verdict = .identical
                c.artifacts[0].original = .init(sha256: String(repeating: "00", count: 32), size: 1)
                return c
            }, "contradict")
        expectRefused(try Self.make(jobID: "jother") { Self.honest($0) }, "is for job jrebuild")
        expectRefused(
            try Self.make { bytes in
                var c = Self.honest(bytes)
                c.nonce = "ffffffff"
                return c
            }, "names nonce ffffffff")
        expectRefused(try Self.make { _ in Self.honest(Array("not what was built".utf8)) }, "are not this result's artifacts")
    }

    @Test func theOriginalMustBeTheOneComparedWith() throws {
        let c = try check(try Self.make { Self.honest($0) })
        func originalReport(_ artifacts: [String: String]) -> VerificationReport {
            var r = VerificationReport()
            r.ok = true
            r.jobID = "joriginal"
            r.artifacts = artifacts
            return r
        }
        let report = originalReport(["artifacts/hello": c.artifacts[0].original!.sha256])
        try RebuildComparisonVerifier().checkOriginal(c, tarballSha256: String(repeating: "ab", count: 32), report: report)
        #expect(throws: VerificationError.self) {
            try RebuildComparisonVerifier().checkOriginal(c, tarballSha256: String(repeating: "cd", count: 32), report: report)
        }
        let otherArtifacts = originalReport(["artifacts/hello": String(repeating: "00", count: 32)])
        #expect(throws: VerificationError.self) {
            try RebuildComparisonVerifier().checkOriginal(c, tarballSha256: String(repeating: "ab", count: 32), report: otherArtifacts)
        }
    }
}
