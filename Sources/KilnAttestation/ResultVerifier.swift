import Foundation
import KilnArchive
import KilnCore
import KilnTEE

/// Offline verification of a Kiln result, every verdict-changing field checked against a signature:
/// files present → both DSSE envelopes signed by the key the binding names → the evidence equals its
/// signed claims → payload is provenance.json → binding recomputes → the TEE report (verified against
/// the vendor's pinned root where possible) carries report_data → the signing key is trusted (pinned
/// by the user, or bound by a hardware-verified report) → nonce → every file listed in the manifest
/// with its digest and nothing else present → provenance subjects are exactly `artifacts/`.
public struct ResultVerifier: Sendable {
    public struct Options: Sendable {
        public var expectedNonce: String
        /// Keys the user trusts (`--key`, or `--gateway`'s keys).
        public var trustedKeys: [PublicKey]
        /// Key fingerprints (hex SHA-256 of the raw public key) the user trusts (`--key-fingerprint`).
        public var trustedKeyFingerprints: [String]
        public var allowTEENone: Bool
        public var allowUnverifiedTEE: Bool
        /// Trust a signing key because a hardware-verified report binds it, without the user pinning
        /// it (`--trust-hardware`; never implied: `KeyTrustRule`).
        public var trustHardware = false
        /// SEV-SNP `MEASUREMENT` or TDX `MRTD`, hex, that the report must state.
        public var expectedMeasurement: String?
        /// VCEK / ASK / ARK the user supplied (`--vcek`, `--amd-chain`).
        public var sevCertificates: SEVCertificateTable
        public var sevPolicy: SEVSNPVerifier.Policy
        /// Certificate validity is checked at this time.
        public var now: Date

        public init(
            expectedNonce: String, trustedKeys: [PublicKey] = [], trustedKeyFingerprints: [String] = [],
            allowTEENone: Bool = false, allowUnverifiedTEE: Bool = false, expectedMeasurement: String? = nil,
            sevCertificates: SEVCertificateTable = .init(), sevPolicy: SEVSNPVerifier.Policy = .init(), now: Date = Date()
        ) {
            self.expectedNonce = expectedNonce.lowercased()
            self.trustedKeys = trustedKeys
            self.trustedKeyFingerprints = trustedKeyFingerprints.map { $0.lowercased() }
            self.allowTEENone = allowTEENone
            self.allowUnverifiedTEE = allowUnverifiedTEE
            self.expectedMeasurement = expectedMeasurement?.lowercased()
            self.sevCertificates = sevCertificates
            self.sevPolicy = sevPolicy
            self.now = now
        }
    }

    public var options: Options

    public init(options: Options) { self.options = options }

    public init(trustedKeys: [PublicKey], expectedNonce: String, allowTEENone: Bool = false) {
        self.init(options: .init(expectedNonce: expectedNonce, trustedKeys: trustedKeys, allowTEENone: allowTEENone))
    }

    /// Verifies and throws at the first failed check.
    public func verify(path: String) throws(VerificationError) -> VerificationReport {
        let report = appraise(path: path)
        if !report.ok { throw VerificationError(report.failedStep ?? .files, report.error ?? "verification failed") }
        return report
    }

    /// Runs every check up to the first failure and reports them all (a result tarball is extracted
    /// safely into a temporary directory first).
    public func appraise(path: String) -> VerificationReport {
        var report = VerificationReport()
        var isDir: ObjCBool = false
        guard FileManager.default.fileExists(atPath: path, isDirectory: &isDir) else {
            return failed(report, .init(.files, "\(path) does not exist"))
        }
        if isDir.boolValue { return appraise(directory: path) }
        let scratch = FileManager.default.temporaryDirectory.appendingPathComponent("kiln-verify-\(UUID().uuidString)").path
        defer { try? FileManager.default.removeItem(atPath: scratch) }
        do {
            try FileManager.default.createDirectory(atPath: scratch, withIntermediateDirectories: true)
            var strict = ArchiveExtractor.Configuration()
            strict.filesOnlyEachNameOnce = true
            _ = try ArchiveExtractor(configuration: strict).extract(archivePath: path, into: scratch)
        } catch {
            return failed(report, .init(.files, "cannot unpack \(path): \(error)"))
        }
        report = appraise(directory: scratch)
        return report
    }

    public func appraise(directory: String) -> VerificationReport {
        var report = VerificationReport()
        do {
            try run(directory, &report)
            report.ok = true
        } catch {
            report = failed(report, error)
        }
        return report
    }

    private func failed(_ report: VerificationReport, _ error: VerificationError) -> VerificationReport {
        var r = report
        r.ok = false
        r.verdict = nil
        r.failedStep = error.step
        r.error = error.message
        r.checks.append(.init(error.step.rawValue, .fail, error.message))
        return r
    }

    private func run(_ directory: String, _ report: inout VerificationReport) throws(VerificationError) {
        // Files.
        let evidenceBytes = try read(directory, "evidence.json")
        let provenanceBytes = try read(directory, "provenance.json")
        let manifestBytes = try read(directory, "manifest.json")
        let evidence: Evidence
        do { evidence = try CanonicalJSON.decode(Evidence.self, from: evidenceBytes) } catch {
            throw .init(.files, "evidence.json is not valid evidence: \(error)")
        }
        guard evidence.version == Evidence.version, let claimsEnvelope = evidence.claims else {
            throw .init(.claims, "evidence version \(evidence.version) carries unsigned claims (tee, binding); it cannot be verified: rebuild it")
        }

        // Signatures: both envelopes by the key the binding names (trust in that key comes later).
        let signer: PublicKey
        do { signer = try PublicKey(text: evidence.binding.publicKey) } catch {
            throw .init(.binding, "binding.public_key is not an Ed25519 public key")
        }
        report.keyFingerprint = signer.keyID
        let (_, payload) = try evidence.dsse.verify(trustedKeys: [signer])
        let (_, claimsBytes) = try claimsEnvelope.verify(trustedKeys: [signer], payloadType: EvidenceClaims.payloadType)
        report.checks.append(.init("signature", .pass, "provenance and claims envelopes signed by key \(signer.keyID)"))

        // The evidence is exactly what was signed.
        let claims: EvidenceClaims
        do { claims = try CanonicalJSON.decode(EvidenceClaims.self, from: claimsBytes) } catch {
            throw .init(.claims, "the signed claims are not valid: \(error)")
        }
        guard claims.scheme == EvidenceClaims.scheme else { throw .init(.claims, "unknown claims scheme '\(claims.scheme)'") }
        let reportBytes = try decodeBase64(evidence.report, "report")
        let auxBytes = try decodeBase64(evidence.aux, "aux")
        let unsigned: [(String, Bool)] = [
            ("tee", evidence.tee == claims.tee), ("provider", evidence.provider == claims.provider),
            ("report", reportBytes.map { FileDigest.of(bytes: $0).sha256 } == claims.reportSha256),
            ("aux", auxBytes.map { FileDigest.of(bytes: $0).sha256 } == claims.auxSha256),
            ("report_data", evidence.reportData == claims.reportData), ("binding", evidence.binding == claims.binding),
            // A certificate that cannot be digested does not equal the signed digest: the check fails.
            ("certificate", (try? evidence.certificate.map(EvidenceClaims.digest(of:))) == claims.certificateSha256),
        ]
        if let (field, _) = unsigned.first(where: { !$0.1 }) {
            throw .init(.claims, "evidence.json's \(field) is not what the signer signed")
        }
        report.tee = claims.tee
        report.checks.append(.init("claims", .pass, "tee, provider, report, aux, report_data, binding and certificate equal the signed claims"))

        guard payload == provenanceBytes else { throw .init(.payload, "the signed payload differs from provenance.json") }
        report.checks.append(.init("payload", .pass, "provenance.json is the signed payload"))

        // Binding.
        let binding = claims.binding
        let provenanceDigest = FileDigest.of(bytes: provenanceBytes).sha256
        let manifestDigest = FileDigest.of(bytes: manifestBytes).sha256
        guard binding.provenanceSha256 == provenanceDigest else {
            throw .init(.binding, "binding.provenance_sha256 \(binding.provenanceSha256) does not match provenance.json (\(provenanceDigest))")
        }
        guard binding.manifestSha256 == manifestDigest else {
            throw .init(.binding, "binding.manifest_sha256 \(binding.manifestSha256) does not match manifest.json (\(manifestDigest))")
        }
        let reportData = try binding.reportData().hexString
        guard claims.reportData == reportData else {
            throw .init(.binding, "report_data \(claims.reportData) does not recompute from the binding (\(reportData))")
        }
        report.checks.append(.init("binding", .pass, "report_data = SHA-512(nonce, provenance, manifest, key) recomputes"))

        // TEE.
        let verdict = try appraiseTEE(claims: claims, report: reportBytes, aux: auxBytes, reportData: reportData, into: &report)
        report.verdict = verdict

        let statement: Statement
        do { statement = try CanonicalJSON.decode(Statement.self, from: provenanceBytes) } catch {
            throw .init(.payload, "provenance.json is not an in-toto Statement with a SLSA v1 predicate: \(error)")
        }
        guard statement.type == Statement.type, statement.predicateType == Statement.slsaPredicateType else {
            throw .init(.payload, "provenance.json has _type '\(statement.type)' / predicateType '\(statement.predicateType)'")
        }

        // Trust in the signing key.
        let userPinnedKeys = !(options.trustedKeys.isEmpty && options.trustedKeyFingerprints.isEmpty)
        switch KeyTrustRule.decide(
            signer: signer.keyID,
            signerIsPinned: options.trustedKeys.contains(where: { $0.keyID == signer.keyID }) || options.trustedKeyFingerprints.contains(signer.keyID),
            hasCertificate: evidence.certificate != nil, userPinnedKeys: userPinnedKeys, verdict: verdict, trustHardware: options.trustHardware)
        {
        case .pinned:
            report.keyTrust = .pinned
            report.checks.append(.init("trust", .pass, "the signing key \(signer.keyID) is one you pinned"))
        case .checkCertificate:
            guard let certificate = evidence.certificate else { throw .init(.trust, "the evidence carries no worker certificate") }
            try checkCertificate(certificate, signer: signer, statement: statement, into: &report)
        case .hardwareBound:
            report.keyTrust = .hardwareBound
            report.checks.append(.init("trust", .pass, "the signing key is bound into a hardware-verified report, and you asked to trust hardware"))
        case .refuse(let why):
            throw .init(.trust, why)
        }

        // Measurement.
        if let expected = options.expectedMeasurement {
            guard let actual = report.measurement else { throw .init(.measurement, "--expect-measurement given, but the result has no TEE report") }
            guard actual == expected else { throw .init(.measurement, "the report's measurement is \(actual), expected \(expected)") }
            report.checks.append(.init("measurement", .pass, "measurement \(actual) is the expected one"))
        }

        // Nonce.
        guard binding.nonce == options.expectedNonce else {
            throw .init(.nonce, "nonce in the evidence is \(binding.nonce), expected \(options.expectedNonce)")
        }
        guard statement.predicate.buildDefinition.externalParameters.nonce.lowercased() == options.expectedNonce else {
            throw .init(.nonce, "nonce in provenance.json is \(statement.predicate.buildDefinition.externalParameters.nonce), expected \(options.expectedNonce)")
        }

        // Manifest: every file listed, present, with its digest; nothing else.
        let manifest: Manifest
        do { manifest = try CanonicalJSON.decode(Manifest.self, from: manifestBytes) } catch {
            throw .init(.manifest, "manifest.json is not valid: \(error)")
        }
        guard manifest.inputs.nonce.lowercased() == options.expectedNonce else {
            throw .init(.nonce, "nonce in manifest.json is \(manifest.inputs.nonce), expected \(options.expectedNonce)")
        }
        report.checks.append(.init("nonce", .pass, "evidence, provenance and manifest carry your nonce"))
        // Signed with the provenance: what the build asked for, and whether it had network.
        let external = statement.predicate.buildDefinition.externalParameters
        report.buildConfig = external.buildConfig
        report.buildOptions = external.buildOptions
        report.hermetic = !external.hadNetwork
        guard manifest.jobID == claims.jobID else { throw .init(.claims, "the claims name job \(claims.jobID), the manifest \(manifest.jobID)") }
        report.jobID = manifest.jobID
        try checkFiles(directory, manifest)
        report.checks.append(.init("manifest", .pass, "\(manifest.files.count) listed files present with their digests, no other file"))

        // Subjects are exactly the artifacts.
        var artifacts: [String: String] = [:]
        for file in manifest.files where file.path.hasPrefix("artifacts/") { artifacts[file.path] = file.sha256 }
        var subjects: [String: String] = [:]
        for s in statement.subject {
            guard let name = s.name, let d = s.digest?["sha256"] else { throw .init(.subjects, "a provenance subject lacks a name or sha256") }
            subjects[name] = d
        }
        if subjects != artifacts {
            let missing = Set(artifacts.keys).subtracting(subjects.keys).sorted()
            let extra = Set(subjects.keys).subtracting(artifacts.keys).sorted()
            let differ = artifacts.keys.filter { subjects[$0] != nil && subjects[$0] != artifacts[$0] }.sorted()
            throw .init(.subjects, "provenance subjects do not match artifacts/ (not in provenance: \(missing), not in artifacts: \(extra), digest differs: \(differ))")
        }
        report.artifacts = artifacts
        report.checks.append(.init("subjects", .pass, "provenance subjects are exactly artifacts/"))

        // Byproducts that name a file are files of the result, with the digest the provenance states.
        let listed = Dictionary(manifest.files.map { ($0.path, $0.sha256) }, uniquingKeysWith: { a, _ in a })
        for b in statement.predicate.runDetails.byproducts {
            guard let name = b.name, let digest = b.digest?["sha256"] else { continue }
            guard listed[name] == digest else {
                throw .init(.subjects, "the provenance names byproduct \(name) (sha256 \(digest)), which the result does not ship with that digest")
            }
        }
    }

    private func checkFiles(_ directory: String, _ manifest: Manifest) throws(VerificationError) {
        var onDisk = Set<String>()
        do {
            for rel in try TarballWriter.sortedEntries(of: directory) {
                var st = stat()
                guard lstat(directory + "/" + rel, &st) == 0 else { continue }
                switch st.st_mode & S_IFMT {
                case S_IFDIR: continue
                case S_IFREG: onDisk.insert(rel)
                default: throw VerificationError(.files, "\(rel) is not a regular file: a result holds only files and directories")
                }
            }
        } catch let e as VerificationError {
            throw e
        } catch {
            throw .init(.files, "cannot list \(directory): \(error)")
        }
        onDisk.subtract(["manifest.json", "evidence.json"])
        for file in manifest.files {
            guard onDisk.contains(file.path) else { throw .init(.manifest, "\(file.path) is listed in manifest.json but missing") }
            let actual: FileDigest
            do { actual = try FileDigest.of(file: directory + "/" + file.path) } catch {
                throw .init(.manifest, "cannot read \(file.path)")
            }
            guard actual.sha256 == file.sha256, actual.size == file.size else {
                throw .init(.manifest, "\(file.path) has sha256 \(actual.sha256), manifest.json says \(file.sha256)")
            }
            onDisk.remove(file.path)
        }
        if let extra = onDisk.sorted().first {
            throw .init(.manifest, "\(extra) is in the result but not in manifest.json")
        }
    }

    private func decodeBase64(_ text: String?, _ field: String) throws(VerificationError) -> [UInt8]? {
        guard let text else { return nil }
        guard let bytes = Base64.decode(text) else { throw .init(.files, "evidence.json's \(field) is not base64") }
        return bytes
    }

    private func read(_ dir: String, _ name: String) throws(VerificationError) -> [UInt8] {
        var st = stat()
        guard lstat(dir + "/" + name, &st) == 0, st.st_mode & S_IFMT == S_IFREG, let data = FileManager.default.contents(atPath: dir + "/" + name) else {
            throw .init(.files, "\(name) is missing from the result (or not a regular file)")
        }
        return Array(data)
    }
}
