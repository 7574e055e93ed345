import Foundation
import KilnArchive
import KilnAttestation
import KilnCore
import KilnTEE
import KilnTestSupport
import Testing

/// Every way an attacker who holds a genuine result (but not the farm key) might alter it, and the
/// check that refuses each. The Python verifier in Tests/python runs the same table.
@Suite struct TamperTableTests {
    typealias Fixture = ResultRoundTripTests.Fixture
    static let nonce = ResultRoundTripTests.nonce

    struct Case: Sendable, CustomTestStringConvertible {
        let name: String
        let step: VerificationError.Step
        let text: String
        let tamper: @Sendable (Fixture) throws -> Void
        var testDescription: String { name }
    }

    static func flip(_ path: String, at offset: Int? = nil) throws {
        var b = Array(try Data(contentsOf: URL(fileURLWithPath: path)))
        b[offset ?? b.count / 2] ^= 0x01
        try Data(b).write(to: URL(fileURLWithPath: path))
    }

    static func evidence(_ f: Fixture) throws -> Evidence {
        try CanonicalJSON.decode(Evidence.self, from: Array(try Data(contentsOf: URL(fileURLWithPath: f.unpacked + "/evidence.json"))))
    }

    static func write(_ e: Evidence, _ f: Fixture) throws {
        try Data(try CanonicalJSON.encode(e)).write(to: URL(fileURLWithPath: f.unpacked + "/evidence.json"))
    }

    static func bytes(_ path: String) throws -> [UInt8] { Array(try Data(contentsOf: URL(fileURLWithPath: path))) }

    /// Replaces Cargo.lock and re-hashes the manifest, then fixes every unsigned copy in evidence.json.
    static func replaceLockAndRehash(_ f: Fixture) throws {
        let lock = Array("# attacker's lock file\n".utf8)
        try Data(lock).write(to: URL(fileURLWithPath: f.unpacked + "/build-config/Cargo.lock"))
        var manifest = try CanonicalJSON.decode(Manifest.self, from: try bytes(f.unpacked + "/manifest.json"))
        let d = FileDigest.of(bytes: lock)
        manifest.files = manifest.files.map { $0.path == "build-config/Cargo.lock" ? .init(path: $0.path, sha256: d.sha256, size: d.size, mode: $0.mode) : $0 }
        let newManifest = try CanonicalJSON.encode(manifest)
        try Data(newManifest).write(to: URL(fileURLWithPath: f.unpacked + "/manifest.json"))
        var e = try evidence(f)
        e.binding.manifestSha256 = FileDigest.of(bytes: newManifest).sha256
        e.reportData = try e.binding.reportData().hexString
        try write(e, f)
    }

    /// Re-signs the whole result with a key the attacker holds.
    static func resign(_ f: Fixture) throws {
        let builder = ResultBuilder(key: SigningKey(), evidenceProvider: NoTEEEvidenceProvider())
        let evidence = try builder.makeEvidence(
            provenance: try bytes(f.unpacked + "/provenance.json"), manifest: try bytes(f.unpacked + "/manifest.json"),
            nonce: nonce, jobID: "job-1")
        try Data(evidence).write(to: URL(fileURLWithPath: f.unpacked + "/evidence.json"))
    }

    static let cases: [Case] = [
        Case(name: "flip a byte of artifacts/hello", step: .manifest, text: "artifacts/hello has sha256") { try flip($0.unpacked + "/artifacts/hello") },
        Case(name: "flip a byte of artifacts/sub/libhello.so", step: .manifest, text: "libhello.so has sha256") {
            try flip($0.unpacked + "/artifacts/sub/libhello.so", at: 0)
        },
        Case(name: "flip a byte of build-config/Cargo.lock", step: .manifest, text: "Cargo.lock has sha256") {
            try flip($0.unpacked + "/build-config/Cargo.lock", at: 0)
        },
        Case(name: "flip a byte of provenance.json", step: .payload, text: "differs from provenance.json") { try flip($0.unpacked + "/provenance.json", at: 40) },
        Case(name: "flip a byte of manifest.json", step: .binding, text: "manifest_sha256") { try flip($0.unpacked + "/manifest.json", at: 30) },
        Case(name: "flip a byte of the provenance signature", step: .signature, text: "does not verify") { f in
            var e = try evidence(f)
            var sig = Base64.decode(e.dsse.signatures[0].sig)!
            sig[5] ^= 1
            e.dsse.signatures[0].sig = Data(sig).base64EncodedString()
            try write(e, f)
        },
        Case(name: "flip a byte of the claims signature", step: .signature, text: "does not verify") { f in
            var e = try evidence(f)
            var sig = Base64.decode(e.claims!.signatures[0].sig)!
            sig[9] ^= 1
            e.claims!.signatures[0].sig = Data(sig).base64EncodedString()
            try write(e, f)
        },
        Case(name: "drop the claims envelope (version 1 evidence)", step: .claims, text: "unsigned claims") { f in
            var e = try evidence(f)
            e.claims = nil
            e.version = 1
            try write(e, f)
        },
        Case(name: "add a file artifacts/extra", step: .manifest, text: "artifacts/extra is in the result but not in manifest.json") {
            try FileManager.default.writeFile(atPath: $0.unpacked + "/artifacts/extra", contents: Data("evil".utf8))
        },
        Case(name: "add a top-level file", step: .manifest, text: "README is in the result") {
            try FileManager.default.writeFile(atPath: $0.unpacked + "/README", contents: Data("hi".utf8))
        },
        Case(name: "remove artifacts/hello", step: .manifest, text: "artifacts/hello is listed in manifest.json but missing") {
            try FileManager.default.removeItem(atPath: $0.unpacked + "/artifacts/hello")
        },
        Case(name: "rename artifacts/hello", step: .manifest, text: "artifacts/hello is listed in manifest.json but missing") {
            try FileManager.default.moveItem(atPath: $0.unpacked + "/artifacts/hello", toPath: $0.unpacked + "/artifacts/hell0")
        },
        Case(name: "a symlink in place of an artifact", step: .files, text: "not a regular file") {
            try FileManager.default.removeItem(atPath: $0.unpacked + "/artifacts/hello")
            symlink("/etc/hostname", $0.unpacked + "/artifacts/hello")
        },
        Case(
            name: "replace build-config/Cargo.lock and re-hash the manifest and binding", step: .claims, text: "is not what the signer signed",
            tamper: replaceLockAndRehash),
        Case(name: "change tee none → sev-snp with a hand-made report", step: .claims, text: "tee is not what the signer signed") { f in
            var e = try evidence(f)
            e.tee = "sev-snp"
            e.report = Data([UInt8](repeating: 0, count: 0x50) + Hex.decode(e.reportData)!).base64EncodedString()
            try write(e, f)
        },
        Case(name: "swap the nonce in the evidence", step: .claims, text: "binding is not what the signer signed") { f in
            var e = try evidence(f)
            e.binding.nonce = "ffff"
            try write(e, f)
        },
        Case(name: "re-sign everything with another key", step: .trust, text: "which you did not pin", tamper: resign),
    ]

    @Test(arguments: cases)
    func tamperedResultIsRefused(_ c: Case) throws {
        let f = try ResultRoundTripTests.make()
        let verifier = ResultVerifier(trustedKeys: [f.key.publicKey], expectedNonce: Self.nonce, allowTEENone: true)
        _ = try verifier.verify(path: f.unpacked)  // genuine first
        try c.tamper(f)
        let report = verifier.appraise(path: f.unpacked)
        #expect(!report.ok)
        #expect(report.failedStep == c.step, "\(c.name): \(report.error ?? "")")
        #expect(report.error?.contains(c.text) == true, "\(c.name): \(report.error ?? "")")
        #expect(report.checks.last?.outcome == .fail)
        print("TAMPER | \(c.name) | \(report.failedStep?.rawValue ?? "accepted") | \(report.error ?? "")")
    }

    @Test func theVerifierExpectsTheNonceTheUserSent() throws {
        let f = try ResultRoundTripTests.make()
        let report = ResultVerifier(trustedKeys: [f.key.publicKey], expectedNonce: "ffff", allowTEENone: true).appraise(path: f.tarball)
        #expect(report.failedStep == .nonce)
    }

    @Test func aGenuineReportThatBindsAnotherResultIsRefused() throws {
        // A real Milan report, validly signed by AMD's chain, attached to a Kiln result it never saw.
        let f = try ResultRoundTripTests.make(provider: TEEFixture.ReplayingProvider())
        let options = ResultVerifier.Options(expectedNonce: Self.nonce, trustedKeys: [f.key.publicKey], now: TEEFixture.now)
        let report = ResultVerifier(options: options).appraise(path: f.tarball)
        #expect(report.failedStep == .tee)
        #expect(report.error?.contains("attests another result") == true, "\(report.error ?? "")")
        // The chain and signature themselves passed: the report is genuine.
        #expect(report.checks.contains { $0.name == "tee.signature" && $0.outcome == .pass })
        #expect(report.checks.contains { $0.name == "tee.vcek-chain" && $0.outcome == .pass })
        print("TAMPER | a genuine SEV-SNP report that binds another result | tee | \(report.error ?? "")")
    }

    @Test func replacingTheReportOfATEEResultIsRefused() throws {
        let f = try ResultRoundTripTests.make(provider: TEEFixture.ReplayingProvider())
        var e = try Self.evidence(f)
        e.report = Data(TEEFixture.file("sev-gcp-x25519-bound.bin")).base64EncodedString()
        try Self.write(e, f)
        let report = ResultVerifier(options: .init(expectedNonce: Self.nonce, trustedKeys: [f.key.publicKey], now: TEEFixture.now)).appraise(path: f.unpacked)
        #expect(report.failedStep == .claims)
        #expect(report.error?.contains("report is not what the signer signed") == true)
        print("TAMPER | replace the report | claims | \(report.error ?? "")")
    }

    @Test func anUnknownTEEKindIsRefusedEvenWhenSigned() throws {
        struct Odd: EvidenceProvider {
            var tee: String { "sgx-maybe" }
            func report(reportData: [UInt8]) throws -> EvidenceReport { .init(tee: "sgx-maybe", provider: "x", report: reportData, aux: nil) }
        }
        let f = try ResultRoundTripTests.make(provider: Odd())
        let report = ResultVerifier(trustedKeys: [f.key.publicKey], expectedNonce: Self.nonce, allowTEENone: true).appraise(path: f.tarball)
        #expect(report.failedStep == .tee)
        #expect(report.error?.contains("unknown tee") == true)
    }

    @Test func aKeyFingerprintPinsTheKeyWithoutTheKeyFile() throws {
        let f = try ResultRoundTripTests.make()
        let pinned = ResultVerifier(options: .init(expectedNonce: Self.nonce, trustedKeyFingerprints: [f.key.publicKey.keyID], allowTEENone: true))
        let report = try pinned.verify(path: f.tarball)
        #expect(report.verdict == .noTEE && report.keyTrust == .pinned && report.keyFingerprint == f.key.publicKey.keyID)
        let nobody = ResultVerifier(options: .init(expectedNonce: Self.nonce, allowTEENone: true)).appraise(path: f.tarball)
        #expect(nobody.failedStep == .trust)
        let measured = ResultVerifier(
            options: .init(
                expectedNonce: Self.nonce, trustedKeys: [f.key.publicKey], allowTEENone: true,
                expectedMeasurement: String(repeating: "ab", count: 48))
        ).appraise(path: f.tarball)
        #expect(measured.failedStep == .measurement)
    }
}

extension TamperTableTests {
    @Test func aByproductThatDoesNotShipIsRefused() throws {
        let dir = try TemporaryDirectory()
        try FileManager.default.createDirectory(atPath: dir.file("art"), withIntermediateDirectories: true)
        try FileManager.default.writeFile(atPath: dir.file("art/x"), contents: Data("x".utf8))
        var inputs = ResultRoundTripTests.inputs()
        inputs.byproducts = [ResourceDescriptor(name: "ghost.log", digest: ["sha256": String(repeating: "b", count: 64)])]
        let key = SigningKey()
        _ = try ResultBuilder(key: key, evidenceProvider: NoTEEEvidenceProvider())
            .build(artifactsDirectory: dir.file("art"), buildConfig: [:], inputs: inputs, output: dir.file("r.tgz"))
        let report = ResultVerifier(trustedKeys: [key.publicKey], expectedNonce: Self.nonce, allowTEENone: true).appraise(path: dir.file("r.tgz"))
        #expect(report.failedStep == .subjects)
        #expect(report.error?.contains("ghost.log") == true)
    }
}

/// #29 item 5: `kiln verify` reads the archive, not only the tree it leaves. A genuine result with a
/// trojan copy of an artifact prepended under the same name verified before (tar keeps the last copy,
/// and the last copy is genuine), yet `tar --skip-old-files` — and any tool that keeps the first copy —
/// extracts the trojan. Links have no place in a result either.
@Suite struct ResultArchiveTests {
    /// Rewrites the genuine tarball with `extra` entries (name, kind, content) placed before its own.
    static func craft(_ f: ResultRoundTripTests.Fixture, _ extra: [(String, String, String)]) async throws -> String {
        let out = f.dir.file("crafted.tar.gz")
        let script = """
            import io, sys, tarfile
            src, out, extra = sys.argv[1], sys.argv[2], sys.argv[3:]
            with tarfile.open(src) as t, tarfile.open(out, "w:gz") as o:
                for i in range(0, len(extra), 3):
                    name, kind, content = extra[i:i + 3]
                    info = tarfile.TarInfo(name)
                    if kind == "link":
                        info.type, info.linkname = tarfile.SYMTYPE, content
                        o.addfile(info)
                    else:
                        data = content.encode(); info.size = len(data); info.mode = 0o755
                        o.addfile(info, io.BytesIO(data))
                for m in t.getmembers():
                    o.addfile(m, t.extractfile(m) if m.isfile() else None)
            """
        try await Command.run("/usr/bin/python3", ["-c", script, f.tarball, out] + extra.flatMap { [$0.0, $0.1, $0.2] })
        return out
    }

    @Test func aTrojanCopyPrependedUnderAnArtifactsNameIsRefused() async throws {
        let f = try ResultRoundTripTests.make()
        let crafted = try await Self.craft(f, [("artifacts/hello", "file", "#!/bin/sh\necho trojan\n")])
        // The attack is real: a tool that keeps the first copy gets the trojan.
        let firstWins = f.dir.file("first-wins")
        try FileManager.default.createDirectory(atPath: firstWins, withIntermediateDirectories: true)
        try await Command.run("/bin/tar", ["--skip-old-files", "-xzf", crafted, "-C", firstWins])
        #expect(try String(contentsOfFile: firstWins + "/artifacts/hello", encoding: .utf8).contains("trojan"))
        let report = ResultVerifier(trustedKeys: [f.key.publicKey], expectedNonce: ResultRoundTripTests.nonce, allowTEENone: true).appraise(path: crafted)
        #expect(!report.ok && report.failedStep == .files, "\(report)")
        #expect(report.error?.contains("'artifacts/hello' appears more than once") == true, "\(report.error ?? "")")
        // The genuine tarball still verifies.
        #expect(ResultVerifier(trustedKeys: [f.key.publicKey], expectedNonce: ResultRoundTripTests.nonce, allowTEENone: true).appraise(path: f.tarball).ok)
    }

    @Test func linksInAResultArchiveAreRefused() async throws {
        let f = try ResultRoundTripTests.make()
        let crafted = try await Self.craft(f, [("artifacts/extra", "link", "hello")])
        let report = ResultVerifier(trustedKeys: [f.key.publicKey], expectedNonce: ResultRoundTripTests.nonce, allowTEENone: true).appraise(path: crafted)
        #expect(!report.ok && report.error?.contains("'artifacts/extra' is a link") == true, "\(report.error ?? "")")
    }
}
