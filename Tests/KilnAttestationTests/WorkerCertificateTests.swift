import Foundation
import KilnArchive
import KilnAttestation
import KilnCore
import KilnTestSupport
import Testing

/// Farm key → worker key → provenance (#19 item 3): a result signed by a worker's in-memory key
/// verifies with only the farm key pinned when, and only when, the farm's certificate vouches for
/// that key, that worker, that time and that image.
@Suite struct WorkerCertificateTests {
    static let nonce = ResultRoundTripTests.nonce
    static let image = [
        ResourceDescriptor(name: "vmlinuz", digest: ["sha256": String(repeating: "1", count: 64)]),
        ResourceDescriptor(name: "initramfs.cpio", digest: ["sha256": String(repeating: "2", count: 64)]),
    ]

    struct Certified {
        let dir: TemporaryDirectory
        let farm: SigningKey
        let worker: SigningKey
        var unpacked: String { dir.file("unpacked") }
    }

    /// A result built by `worker` under a certificate `issue` makes (by default: the farm's, for this
    /// key and worker, valid around the build, naming `image`).
    static func make(
        farm: SigningKey = SigningKey(), worker: SigningKey = SigningKey(), builderImage: [ResourceDescriptor] = image,
        issue: ((SigningKey, SigningKey) throws -> DSSEEnvelope)? = nil
    ) throws -> Certified {
        let dir = try TemporaryDirectory()
        let fm = FileManager.default
        try fm.createDirectory(atPath: dir.file("art"), withIntermediateDirectories: true)
        try fm.writeFile(atPath: dir.file("art/hello"), contents: Data(repeating: 0x7f, count: 64))
        var inputs = ResultRoundTripTests.inputs()
        inputs.internalParameters["worker_id"] = "wvm1"
        inputs.builderDependencies = builderImage
        let envelope =
            try issue?(farm, worker)
            ?? WorkerCertificate(
                workerID: "wvm1", publicKey: worker.publicKey, issuer: farm.publicKey, image: image,
                notBefore: inputs.startedOn.addingTimeInterval(-60), notAfter: inputs.finishedOn.addingTimeInterval(3600)
            ).issue(with: farm)
        _ = try ResultBuilder(key: worker, evidenceProvider: NoTEEEvidenceProvider(), certificate: envelope)
            .build(artifactsDirectory: dir.file("art"), buildConfig: [:], inputs: inputs, output: dir.file("result.tar.gz"))
        try fm.createDirectory(atPath: dir.file("unpacked"), withIntermediateDirectories: true)
        _ = try ArchiveExtractor().extract(archivePath: dir.file("result.tar.gz"), into: dir.file("unpacked"))
        return Certified(dir: dir, farm: farm, worker: worker)
    }

    static func verify(_ c: Certified, keys: [PublicKey]? = nil, fingerprints: [String] = []) -> VerificationReport {
        ResultVerifier(
            options: .init(expectedNonce: nonce, trustedKeys: keys ?? [c.farm.publicKey], trustedKeyFingerprints: fingerprints, allowTEENone: true)
        ).appraise(directory: c.unpacked)
    }

    static func expectRefused(_ report: VerificationReport, _ step: VerificationError.Step, _ text: String, sourceLocation: SourceLocation = #_sourceLocation) {
        #expect(!report.ok, "verified but should fail at \(step)", sourceLocation: sourceLocation)
        #expect(report.failedStep == step, "\(report.error ?? "")", sourceLocation: sourceLocation)
        #expect(report.error?.contains(text) == true, "\(report.error ?? "")", sourceLocation: sourceLocation)
    }

    @Test func aCertifiedWorkerKeyVerifiesWithOnlyTheFarmKeyPinned() throws {
        let c = try Self.make()
        let report = Self.verify(c)
        #expect(report.ok, "\(report.error ?? "")")
        #expect(report.keyTrust == .certified)
        #expect(report.keyFingerprint == c.worker.publicKey.keyID)
        #expect(report.workerCertificate?.workerID == "wvm1")
        #expect(report.workerCertificate?.issuerKeyID == c.farm.publicKey.keyID)
        #expect(report.workerCertificate?.image == ["vmlinuz": String(repeating: "1", count: 64), "initramfs.cpio": String(repeating: "2", count: 64)])
        // The farm key's fingerprint is as good as the key file.
        #expect(Self.verify(c, keys: [], fingerprints: [c.farm.publicKey.keyID]).keyTrust == .certified)
        // The image is in the signed provenance too, as the builder's dependencies.
        let provenance = try CanonicalJSON.decode(Statement.self, from: Array(try Data(contentsOf: URL(fileURLWithPath: c.dir.file("unpacked/provenance.json")))))
        #expect(provenance.predicate.runDetails.builder.builderDependencies == Self.image)
    }

    @Test func aCertificateFromAnotherKeyIsRefused() throws {
        let c = try Self.make(issue: { _, worker in
            let rogue = SigningKey()
            return try WorkerCertificate(
                workerID: "wvm1", publicKey: worker.publicKey, issuer: rogue.publicKey, image: Self.image, notBefore: Date(timeIntervalSince1970: 1_699_999_000),
                notAfter: Date(timeIntervalSince1970: 1_700_000_200)
            ).issue(with: rogue)
        })
        Self.expectRefused(Self.verify(c), .trust, "not signed by a farm key you pinned")
        // With no farm key pinned there is nothing to check it with: refused, and said why.
        Self.expectRefused(Self.verify(c, keys: []), .trust, "without a hardware-verified report")
    }

    @Test func aCertificateForAnotherKeyWorkerTimeOrImageIsRefused() throws {
        let base = Date(timeIntervalSince1970: 1_700_000_000)
        func certificate(
            worker: String = "wvm1", key: PublicKey? = nil, image: [ResourceDescriptor] = Self.image, from: Date = base.addingTimeInterval(-60),
            until: Date = base.addingTimeInterval(3600)
        ) -> (SigningKey, SigningKey) throws -> DSSEEnvelope {
            { farm, workerKey in
                try WorkerCertificate(
                    workerID: worker, publicKey: key ?? workerKey.publicKey, issuer: farm.publicKey, image: image, notBefore: from, notAfter: until
                ).issue(with: farm)
            }
        }
        Self.expectRefused(Self.verify(try Self.make(issue: certificate(key: SigningKey().publicKey))), .trust, "certifies key")
        Self.expectRefused(Self.verify(try Self.make(issue: certificate(worker: "wother"))), .trust, "is for worker wother")
        // The build finished at base + 100 s: a certificate that ended before, or began after, does not cover it.
        Self.expectRefused(Self.verify(try Self.make(issue: certificate(until: base.addingTimeInterval(50)))), .trust, "outside the worker certificate's validity")
        Self.expectRefused(Self.verify(try Self.make(issue: certificate(from: base.addingTimeInterval(200)))), .trust, "outside")
        Self.expectRefused(
            Self.verify(try Self.make(issue: certificate(from: base.addingTimeInterval(-60), until: base.addingTimeInterval(30 * 24 * 3600)))), .trust,
            "valid for more than")
        // The provenance claims another image than the one the farm certified.
        Self.expectRefused(Self.verify(try Self.make(builderImage: [])), .trust, "builder dependencies")
    }

    @Test func swappingTheCertificateInTheEvidenceIsRefused() throws {
        let c = try Self.make()
        let path = c.dir.file("unpacked/evidence.json")
        var evidence = try CanonicalJSON.decode(Evidence.self, from: Array(try Data(contentsOf: URL(fileURLWithPath: path))))
        // Another genuine certificate of the same farm, for the same key and worker, naming another image.
        evidence.certificate = try WorkerCertificate(
            workerID: "wvm1", publicKey: c.worker.publicKey, issuer: c.farm.publicKey, image: [],
            notBefore: Date(timeIntervalSince1970: 1_699_999_000), notAfter: Date(timeIntervalSince1970: 1_700_003_000)
        ).issue(with: c.farm)
        try Data(try CanonicalJSON.encode(evidence)).write(to: URL(fileURLWithPath: path))
        Self.expectRefused(Self.verify(c), .claims, "certificate is not what the signer signed")
        // Removing it altogether is refused too (the claims name its digest).
        evidence.certificate = nil
        try Data(try CanonicalJSON.encode(evidence)).write(to: URL(fileURLWithPath: path))
        Self.expectRefused(Self.verify(c), .claims, "certificate")
    }

    @Test func aPinnedWorkerKeyNeedsNoCertificateAndAnUncertifiedOneIsRefused() throws {
        let c = try Self.make()
        #expect(Self.verify(c, keys: [c.worker.publicKey]).keyTrust == .pinned)
        Self.expectRefused(Self.verify(c, keys: [SigningKey().publicKey]), .trust, "not signed by a farm key you pinned")
    }
}
