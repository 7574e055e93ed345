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

/// #28: a rebuild that differs names the crate behind the difference. The mechanism of ripgrep's
/// occasional non-identical `rg` (`unicode-linebreak` 0.1.4's build script lays out a table through a
/// randomly seeded hash map), reproduced with a crate of our own, built twice by real cargo.
@Suite struct ELFSymbolDiffTests {
    static let project = [
        "Cargo.toml": "[workspace]\nmembers = [\"app\", \"kiln_table\"]\nresolver = \"2\"\n",
        "kiln_table/Cargo.toml": "[package]\nname = \"kiln_table\"\nversion = \"0.1.0\"\nedition = \"2021\"\n",
        "kiln_table/build.rs": """
        use std::collections::HashMap;
        fn main() {
            // Iteration order of a randomly seeded map decides the table's layout: not reproducible.
            let map: HashMap<u32, u32> = (0..64).map(|i| (i, i * 7)).collect();
            let values: Vec<String> = map.iter().map(|(k, v)| format!("{}", k * 1000 + v)).collect();
            let out = std::env::var("OUT_DIR").unwrap();
            std::fs::write(format!("{out}/table.rs"), format!("pub static TABLE: [u32; 64] = [{}];", values.join(", "))).unwrap();
        }
        """,
        "kiln_table/src/lib.rs": "include!(concat!(env!(\"OUT_DIR\"), \"/table.rs\"));\npub fn lookup(i: usize) -> u32 { TABLE[i % 64] }\n",
        "app/Cargo.toml": "[package]\nname = \"app\"\nversion = \"0.1.0\"\nedition = \"2021\"\n\n[dependencies]\nkiln_table = { path = \"../kiln_table\" }\n",
        "app/src/main.rs": "fn main() { println!(\"{}\", kiln_table::lookup(std::env::args().count())); }\n",
    ]

    @Test func aDifferenceInADependencysTableNamesThatCrate() async throws {
        let dir = try TemporaryDirectory()
        try Fixtures.write(Self.project, to: dir.file("src"))
        let cargo = ["/root/.cargo/bin/cargo", NSHomeDirectory() + "/.cargo/bin/cargo", "/usr/bin/cargo"].first { FileManager.default.isExecutableFile(atPath: $0) }
        let cargoPath = try #require(cargo, "cargo is installed")
        var environment = ProcessInfo.processInfo.environment
        environment["PATH"] = (cargoPath as NSString).deletingLastPathComponent + ":/usr/bin:/bin"
        func build(_ n: Int) async throws -> [UInt8] {
            environment["CARGO_TARGET_DIR"] = dir.file("target-\(n)")
            try await Command.run(cargoPath, ["build", "--release", "--offline", "-q"], environment: environment, workingDirectory: dir.file("src"))
            return Array(try Data(contentsOf: URL(fileURLWithPath: dir.file("target-\(n)/release/app"))))
        }
        // Two builds of the same inputs: their tables differ (64 entries in two random orders — the
        // same order twice is as likely as 1 in 64!; a third build settles even that).
        let first = try await build(1)
        var second = try await build(2)
        if first == second { second = try await build(3) }
        let artifact = RebuildComparison.compare(name: "app", original: first, rebuilt: second)
        #expect(artifact.verdict == .different)
        #expect(artifact.differingCrates?.first == "kiln_table", "\(artifact)")
        #expect(artifact.causeCrates == ["kiln_table"], "\(artifact)")
        #expect(artifact.firstDifferenceSymbol?.hasPrefix("kiln_table::TABLE") == true, "\(artifact)")
        #expect(artifact.differingSymbols?.contains { $0.hasPrefix("kiln_table::TABLE") } == true)
        // The same binary against itself: nothing to name.
        #expect(RebuildComparison.compare(name: "app", original: first, rebuilt: first).differingCrates == nil)
    }

    @Test func readableNamesAndCratesOfMangledSymbols() {
        #expect(ELFSymbolDiff.readable("_ZN17unicode_linebreak6tables10PAIR_TABLE17h0123456789abcdefE") == "unicode_linebreak::tables::PAIR_TABLE")
        #expect(ELFSymbolDiff.crate(of: "unicode_linebreak::tables::PAIR_TABLE") == "unicode_linebreak")
        #expect(ELFSymbolDiff.crate(of: "_$LT$alloc..vec..Vec$LT$T$GT$$u20$as$u20$core..ops..drop..Drop$GT$::drop") == "alloc")
        #expect(ELFSymbolDiff.crate(of: "main") == nil, "a C symbol has no crate")
        #expect(ELFSymbolDiff.readable("_ZN99") == "_ZN99", "a truncated name stays as it is")
    }
}
