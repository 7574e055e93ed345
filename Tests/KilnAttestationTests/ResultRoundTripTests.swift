import Foundation
import KilnArchive
import KilnAttestation
import KilnCore
import KilnTestSupport
import Testing

/// Builds a full result from a fake artifacts directory, verifies it, then tampers with it.
@Suite struct ResultRoundTripTests {
    static let nonce = "0123456789abcdef0123456789abcdef"

    struct Fixture {
        let dir: TemporaryDirectory
        let key: SigningKey
        let tarball: String
        let unpacked: String
        let output: ResultBuilder.Output
    }

    static func inputs(jobID: String = "job-1") -> ResultBuilder.Inputs {
        ResultBuilder.Inputs(
            jobID: jobID, nonce: nonce, buildType: BuildType.cargo,
            externalParameters: .init(repository: "git://127.0.0.1/hello.git", ref: "main", nonce: nonce),
            internalParameters: ["cargo": "1.95.0", "command": "cargo build --release --locked"],
            resolvedDependencies: [ResourceDescriptor(uri: "git+git://127.0.0.1/hello.git@main", digest: ["gitCommit": String(repeating: "a", count: 40)])],
            builderID: "https://kiln.build/worker@v1", startedOn: Date(timeIntervalSince1970: 1_700_000_000),
            finishedOn: Date(timeIntervalSince1970: 1_700_000_100),
            manifestInputs: .init(source: "git+git://127.0.0.1/hello.git@main", gitCommit: String(repeating: "a", count: 40), nonce: nonce),
            sourceDateEpoch: 1_700_000_000)
    }

    static func make(provider: any EvidenceProvider = NoTEEEvidenceProvider()) throws -> Fixture {
        let dir = try TemporaryDirectory()
        let fm = FileManager.default
        try fm.createDirectory(atPath: dir.file("art/sub"), withIntermediateDirectories: true)
        try fm.writeFile(atPath: dir.file("art/hello"), contents: Data(repeating: 0x7f, count: 4096), attributes: [.posixPermissions: 0o755])
        try fm.writeFile(atPath: dir.file("art/sub/libhello.so"), contents: Data("lib".utf8))
        try fm.writeFile(atPath: dir.file("Cargo.lock"), contents: Data("# lock\n".utf8))
        try fm.writeFile(atPath: dir.file("build.log"), contents: Data("   Compiling hello v0.1.0\n".utf8))
        let key = SigningKey()
        let out = try ResultBuilder(key: key, evidenceProvider: provider)
            .build(
                artifactsDirectory: dir.file("art"), buildConfig: ["Cargo.lock": dir.file("Cargo.lock")], buildLog: dir.file("build.log"), inputs: inputs(),
                output: dir.file("result.tar.gz"))
        try fm.createDirectory(atPath: dir.file("unpacked"), withIntermediateDirectories: true)
        _ = try ArchiveExtractor().extract(archivePath: dir.file("result.tar.gz"), into: dir.file("unpacked"))
        return Fixture(dir: dir, key: key, tarball: dir.file("result.tar.gz"), unpacked: dir.file("unpacked"), output: out)
    }

    func verifier(_ f: Fixture, nonce: String = nonce, allowNone: Bool = true, keys: [PublicKey]? = nil) -> ResultVerifier {
        ResultVerifier(trustedKeys: keys ?? [f.key.publicKey], expectedNonce: nonce, allowTEENone: allowNone)
    }

    func expectFailure(_ f: Fixture, _ step: VerificationError.Step, _ text: String, verifier v: ResultVerifier? = nil) {
        do {
            _ = try (v ?? verifier(f)).verify(path: f.unpacked)
            Issue.record("verification passed but should fail at \(step)")
        } catch {
            #expect(error.step == step, "\(error)")
            #expect(error.message.contains(text), "\(error.message)")
        }
    }

    func edit(_ path: String, _ change: (inout [UInt8]) -> Void) throws {
        var bytes = Array(try Data(contentsOf: URL(fileURLWithPath: path)))
        change(&bytes)
        try Data(bytes).write(to: URL(fileURLWithPath: path))
    }

    @Test func roundTrip() throws {
        let f = try Self.make()
        let report = try verifier(f).verify(path: f.tarball)
        #expect(report.ok)
        #expect(report.artifacts.keys.sorted() == ["artifacts/hello", "artifacts/sub/libhello.so"])
        #expect(report.artifacts["artifacts/hello"] == f.output.artifacts["artifacts/hello"]?.sha256)
        // The directory form verifies too, and the layout is as designed.
        _ = try verifier(f).verify(path: f.unpacked)
        for p in ["artifacts/hello", "build-config/Cargo.lock", "build.log", "provenance.json", "manifest.json", "evidence.json"] {
            #expect(FileManager.default.fileExists(atPath: f.unpacked + "/" + p), "\(p)")
        }
        let statement = try CanonicalJSON.decode(Statement.self, from: f.output.provenance)
        #expect(statement.predicate.runDetails.metadata.invocationId == "job-1")
        let text = String(decoding: f.output.provenance, as: UTF8.self)
        for key in [
            "\"_type\"", "\"predicateType\"", "\"buildDefinition\"", "\"externalParameters\"", "\"internalParameters\"",
            "\"resolvedDependencies\"", "\"runDetails\"", "\"invocationId\"", "\"startedOn\"", "\"finishedOn\"", "\"byproducts\"",
        ] {
            #expect(text.contains(key), "\(key)")
        }
    }

    @Test func deterministicOutput() throws {
        // Same inputs and key → same tarball bytes (Ed25519 signatures are deterministic here).
        let dir = try TemporaryDirectory()
        let fm = FileManager.default
        try fm.createDirectory(atPath: dir.file("art"), withIntermediateDirectories: true)
        try fm.writeFile(atPath: dir.file("art/x"), contents: Data("x".utf8))
        let key = try SigningKey(seed: [UInt8](repeating: 7, count: 32))
        let b = ResultBuilder(key: key, evidenceProvider: NoTEEEvidenceProvider())
        let o1 = try b.build(artifactsDirectory: dir.file("art"), buildConfig: [:], inputs: Self.inputs(), output: dir.file("1.tgz"))
        let o2 = try b.build(artifactsDirectory: dir.file("art"), buildConfig: [:], inputs: Self.inputs(), output: dir.file("2.tgz"))
        #expect(o1.tarball == o2.tarball)
    }

    @Test func teeNoneNeedsOptIn() throws {
        let f = try Self.make()
        expectFailure(f, .tee, "--allow-tee-none", verifier: verifier(f, allowNone: false))
    }

    @Test func flippedArtifactByte() throws {
        let f = try Self.make()
        try edit(f.unpacked + "/artifacts/hello") { $0[100] ^= 0xFF }
        expectFailure(f, .manifest, "artifacts/hello has sha256")
    }

    @Test func flippedProvenanceByte() throws {
        let f = try Self.make()
        try edit(f.unpacked + "/provenance.json") { $0[40] ^= 0x01 }
        expectFailure(f, .payload, "signed payload differs from provenance.json")
    }

    @Test func flippedManifestByte() throws {
        let f = try Self.make()
        try edit(f.unpacked + "/manifest.json") { $0[30] ^= 0x01 }
        expectFailure(f, .binding, "manifest_sha256")
    }

    @Test func flippedSignature() throws {
        let f = try Self.make()
        var evidence = try CanonicalJSON.decode(Evidence.self, from: Array(try Data(contentsOf: URL(fileURLWithPath: f.unpacked + "/evidence.json"))))
        var sig = Base64.decode(evidence.dsse.signatures[0].sig)!
        sig[5] ^= 0x01
        evidence.dsse.signatures[0].sig = Data(sig).base64EncodedString()
        try Data(try CanonicalJSON.encode(evidence)).write(to: URL(fileURLWithPath: f.unpacked + "/evidence.json"))
        expectFailure(f, .signature, "does not verify with key")
    }

    @Test func wrongNonce() throws {
        let f = try Self.make()
        expectFailure(f, .nonce, "expected ffff", verifier: verifier(f, nonce: "ffff"))
    }

    @Test func wrongKey() throws {
        let f = try Self.make()
        expectFailure(f, .trust, "which you did not pin", verifier: verifier(f, keys: [SigningKey().publicKey]))
    }

    @Test func missingFile() throws {
        let f = try Self.make()
        try FileManager.default.removeItem(atPath: f.unpacked + "/build-config/Cargo.lock")
        expectFailure(f, .manifest, "build-config/Cargo.lock is listed in manifest.json but missing")
        try FileManager.default.removeItem(atPath: f.unpacked + "/evidence.json")
        expectFailure(f, .files, "evidence.json is missing")
    }

    @Test func extraArtifact() throws {
        let f = try Self.make()
        try FileManager.default.writeFile(atPath: f.unpacked + "/artifacts/backdoor", contents: Data("evil".utf8))
        expectFailure(f, .manifest, "artifacts/backdoor is in the result but not in manifest.json")
    }

    @Test func reportDataMismatch() throws {
        let f = try Self.make()
        var evidence = try CanonicalJSON.decode(Evidence.self, from: f.output.evidence)
        evidence.reportData = String(repeating: "0", count: 128)
        try Data(try CanonicalJSON.encode(evidence)).write(to: URL(fileURLWithPath: f.unpacked + "/evidence.json"))
        expectFailure(f, .claims, "report_data is not what the signer signed")
    }

    @Test func reportDataSpecification() async throws {
        // report_data = SHA-512("kiln-evidence-v1" 0x00 ‖ u32be(len) ‖ nonce ‖ sha256(prov) ‖ sha256(manifest) ‖ key)
        let b = Binding(
            nonce: "a1b2", provenanceSha256: String(repeating: "11", count: 32),
            manifestSha256: String(repeating: "22", count: 32), publicKey: String(repeating: "33", count: 32))
        var input = Array("kiln-evidence-v1".utf8) + [0, 0, 0, 0, 2, 0xa1, 0xb2]
        input += [UInt8](repeating: 0x11, count: 32) + [UInt8](repeating: 0x22, count: 32) + [UInt8](repeating: 0x33, count: 32)
        let expected = try await sha512sum(input)
        #expect(try b.reportData().hexString == expected)
    }
}

/// sha512sum(1) of `bytes`, as an independent implementation to compare against.
func sha512sum(_ bytes: [UInt8]) async throws -> String {
    let dir = try TemporaryDirectory(prefix: "kiln-sha512")
    try Data(bytes).write(to: URL(fileURLWithPath: dir.file("input")))
    return String(try await Command.run("/usr/bin/sha512sum", [dir.file("input")]).prefix(128))
}
