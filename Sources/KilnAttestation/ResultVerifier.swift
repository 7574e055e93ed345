import Foundation
import KilnArchive

/// Offline verification of a Kiln result (design §6), in order:
/// files present → DSSE signature with a trusted key → payload equals provenance.json → binding
/// (report_data recomputes; digests and key match; the TEE report carries report_data) → `tee: none`
/// only if allowed → nonce → manifest digests of every file (and no unlisted file) → provenance
/// subjects equal `artifacts/`. The first failure is thrown, naming what did not match.
public struct ResultVerifier: Sendable {
    public struct Report: Sendable, Codable, Equatable {
        public var ok: Bool
        public var jobID: String?
        public var tee: String?
        public var keyID: String?
        public var artifacts: [String: String]
        public var failedStep: VerificationError.Step?
        public var error: String?

        public init(ok: Bool, jobID: String? = nil, tee: String? = nil, keyID: String? = nil, artifacts: [String: String] = [:],
                    failedStep: VerificationError.Step? = nil, error: String? = nil) {
            self.ok = ok
            self.jobID = jobID
            self.tee = tee
            self.keyID = keyID
            self.artifacts = artifacts
            self.failedStep = failedStep
            self.error = error
        }

        enum CodingKeys: String, CodingKey {
            case ok, tee, artifacts, error
            case jobID = "job_id"
            case keyID = "key_id"
            case failedStep = "failed_step"
        }
    }

    public var trustedKeys: [PublicKey]
    public var expectedNonce: String
    public var allowTEENone: Bool

    public init(trustedKeys: [PublicKey], expectedNonce: String, allowTEENone: Bool = false) {
        self.trustedKeys = trustedKeys
        self.expectedNonce = expectedNonce.lowercased()
        self.allowTEENone = allowTEENone
    }

    /// Verifies a result tarball (extracted safely into a temporary directory) or a directory.
    public func verify(path: String) throws(VerificationError) -> Report {
        var isDir: ObjCBool = false
        guard FileManager.default.fileExists(atPath: path, isDirectory: &isDir) else {
            throw .init(.files, "\(path) does not exist")
        }
        if isDir.boolValue { return try verify(directory: path) }
        let scratch = FileManager.default.temporaryDirectory.appendingPathComponent("kiln-verify-\(UUID().uuidString)").path
        defer { try? FileManager.default.removeItem(atPath: scratch) }
        do {
            try FileManager.default.createDirectory(atPath: scratch, withIntermediateDirectories: true)
            _ = try ArchiveExtractor().extract(archivePath: path, into: scratch)
        } catch {
            throw .init(.files, "cannot unpack \(path): \(error)")
        }
        return try verify(directory: scratch)
    }

    public func verify(directory: String) throws(VerificationError) -> Report {
        // 1. Files.
        let evidenceBytes = try read(directory, "evidence.json")
        let provenanceBytes = try read(directory, "provenance.json")
        let manifestBytes = try read(directory, "manifest.json")
        let evidence: Evidence
        do { evidence = try CanonicalJSON.decode(Evidence.self, from: evidenceBytes) } catch {
            throw .init(.files, "evidence.json is not valid evidence: \(error)")
        }

        // 2. Signature over the PAE, before the payload is parsed.
        let (key, payload) = try evidence.dsse.verify(trustedKeys: trustedKeys)

        // 3. Payload is exactly provenance.json.
        guard payload == provenanceBytes else {
            throw .init(.payload, "the signed payload differs from provenance.json")
        }

        // 4. Binding.
        let binding = evidence.binding
        let provenanceDigest = FileDigest.of(bytes: provenanceBytes).sha256
        let manifestDigest = FileDigest.of(bytes: manifestBytes).sha256
        guard binding.provenanceSha256 == provenanceDigest else {
            throw .init(.binding, "binding.provenance_sha256 \(binding.provenanceSha256) does not match provenance.json (\(provenanceDigest))")
        }
        guard binding.manifestSha256 == manifestDigest else {
            throw .init(.binding, "binding.manifest_sha256 \(binding.manifestSha256) does not match manifest.json (\(manifestDigest))")
        }
        guard binding.publicKey == key.hex else {
            throw .init(.binding, "binding.public_key is not the key that signed the envelope")
        }
        let reportData = try binding.reportData().hexString
        guard evidence.reportData == reportData else {
            throw .init(.binding, "report_data \(evidence.reportData) does not recompute from the binding (\(reportData))")
        }
        if evidence.tee != "none" {
            guard let reportB64 = evidence.report, let report = Base64.decode(reportB64) else {
                throw .init(.tee, "evidence claims tee '\(evidence.tee)' but carries no report")
            }
            guard TEEReport.contains(reportData: Hex.decode(reportData)!, report: report, tee: evidence.tee) else {
                throw .init(.tee, "the \(evidence.tee) report does not carry this result's report_data")
            }
        }

        // 5. tee: none only when trusted explicitly.
        if evidence.tee == "none", !allowTEENone {
            throw .init(.tee, "evidence has tee 'none': only the farm key vouches for it; pass --allow-tee-none to accept that")
        }

        // 6. Nonce.
        let statement: Statement
        do { statement = try CanonicalJSON.decode(Statement.self, from: provenanceBytes) } catch {
            throw .init(.payload, "provenance.json is not an in-toto Statement with a SLSA v1 predicate: \(error)")
        }
        guard statement.type == Statement.type, statement.predicateType == Statement.slsaPredicateType else {
            throw .init(.payload, "provenance.json has _type '\(statement.type)' / predicateType '\(statement.predicateType)'")
        }
        guard binding.nonce == expectedNonce else {
            throw .init(.nonce, "nonce in the evidence is \(binding.nonce), expected \(expectedNonce)")
        }
        guard statement.predicate.buildDefinition.externalParameters.nonce.lowercased() == expectedNonce else {
            throw .init(.nonce, "nonce in provenance.json is \(statement.predicate.buildDefinition.externalParameters.nonce), expected \(expectedNonce)")
        }

        // 7. Manifest: every listed file matches, and nothing unlisted is present.
        let manifest: Manifest
        do { manifest = try CanonicalJSON.decode(Manifest.self, from: manifestBytes) } catch {
            throw .init(.manifest, "manifest.json is not valid: \(error)")
        }
        guard manifest.inputs.nonce.lowercased() == expectedNonce else {
            throw .init(.nonce, "nonce in manifest.json is \(manifest.inputs.nonce), expected \(expectedNonce)")
        }
        var onDisk = Set<String>()
        do {
            for rel in try TarballWriter.sortedEntries(of: directory) {
                var st = stat()
                guard lstat(directory + "/" + rel, &st) == 0 else { continue }
                if (st.st_mode & S_IFMT) == S_IFDIR { continue }
                onDisk.insert(rel)
            }
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

        // 8. Subjects are exactly the artifacts.
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
        return Report(ok: true, jobID: manifest.jobID, tee: evidence.tee, keyID: key.keyID, artifacts: artifacts)
    }

    private func read(_ dir: String, _ name: String) throws(VerificationError) -> [UInt8] {
        guard let data = FileManager.default.contents(atPath: dir + "/" + name) else {
            throw .init(.files, "\(name) is missing from the result")
        }
        return Array(data)
    }
}

/// Where the 64 bytes of report_data sit in each kind of hardware report. Checking the vendor's
/// signature chain (AMD VCEK / Intel PCS) needs their certificate services and is not done offline here.
public enum TEEReport {
    /// SEV-SNP ATTESTATION_REPORT: REPORT_DATA at 0x50. TDX quote v4: header (48) + TD report body,
    /// REPORTDATA at body offset 520 → 568.
    public static func contains(reportData: [UInt8], report: [UInt8], tee: String) -> Bool {
        let offset: Int
        switch tee {
        case "sev-snp": offset = 0x50
        case "tdx": offset = 568
        default: return report.firstRange(of: reportData) != nil
        }
        guard report.count >= offset + 64 else { return false }
        return Array(report[offset..<offset + 64]) == reportData
    }
}
