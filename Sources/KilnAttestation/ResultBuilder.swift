import Foundation
import KilnArchive
import KilnCore

/// Assembles the result tarball of design §6 in one pass: artifacts are hashed while they are packed,
/// then provenance.json, manifest.json and evidence.json are generated from those digests and appended
/// (the tarball's sorted order puts them after `artifacts/` and `build-config/`).
public struct ResultBuilder {
    public struct Inputs: Sendable {
        public var jobID: String
        public var nonce: String
        public var buildType: String
        public var externalParameters: SLSAProvenance.ExternalParameters
        public var internalParameters: [String: String]
        /// Source, locked dependencies, toolchain binaries.
        public var resolvedDependencies: [ResourceDescriptor]
        public var builderID: String
        public var builderVersion: [String: String]?
        /// What ran the workload without being part of it: a VM worker's image (kernel, initramfs,
        /// kiln-worker), as its certificate names them.
        public var builderDependencies: [ResourceDescriptor] = []
        public var startedOn: Date
        public var finishedOn: Date
        public var manifestInputs: Manifest.Inputs
        /// Extra byproducts; build-config files and the build log are added automatically, and every
        /// byproduct with a name must be a file of the result.
        public var byproducts: [ResourceDescriptor]
        /// SOURCE_DATE_EPOCH: every tar entry's mtime.
        public var sourceDateEpoch: Int64

        public init(
            jobID: String, nonce: String, buildType: String, externalParameters: SLSAProvenance.ExternalParameters,
            internalParameters: [String: String], resolvedDependencies: [ResourceDescriptor], builderID: String,
            builderVersion: [String: String]? = nil, startedOn: Date, finishedOn: Date, manifestInputs: Manifest.Inputs,
            byproducts: [ResourceDescriptor] = [], sourceDateEpoch: Int64
        ) {
            self.jobID = jobID
            self.nonce = nonce
            self.buildType = buildType
            self.externalParameters = externalParameters
            self.internalParameters = internalParameters
            self.resolvedDependencies = resolvedDependencies
            self.builderID = builderID
            self.builderVersion = builderVersion
            self.startedOn = startedOn
            self.finishedOn = finishedOn
            self.manifestInputs = manifestInputs
            self.byproducts = byproducts
            self.sourceDateEpoch = sourceDateEpoch
        }
    }

    public struct Output: Sendable {
        public var tarball: FileDigest
        public var artifacts: [String: FileDigest]
        public var provenance: [UInt8]
        public var manifest: [UInt8]
        public var evidence: [UInt8]
    }

    public let key: SigningKey
    public let evidenceProvider: any EvidenceProvider
    /// The farm's certificate over `key` (a worker whose key was made in memory), shipped in the
    /// evidence and named in the signed claims.
    public let certificate: DSSEEnvelope?

    public init(key: SigningKey, evidenceProvider: any EvidenceProvider, certificate: DSSEEnvelope? = nil) {
        self.key = key
        self.evidenceProvider = evidenceProvider
        self.certificate = certificate
    }

    /// - Parameters:
    ///   - artifactsDirectory: its files become `artifacts/…` and the provenance subjects.
    ///   - buildConfig: files for `build-config/` (name → source path), e.g. `Cargo.lock`.
    ///   - buildLog: the full build log (written by the worker, never by the build), shipped as `build.log`.
    ///   - attachments: documents the worker made (e.g. `rebuild/comparison.json`), listed in the manifest
    ///     and as byproducts of the signed provenance; their paths must sort after `provenance.json`.
    public func build(
        artifactsDirectory: String, buildConfig: [String: String], buildLog: String? = nil, attachments: [String: [UInt8]] = [:],
        inputs: Inputs, output: String
    ) throws -> Output {
        let attachmentPaths = attachments.keys.sorted { Array($0.utf8).lexicographicallyPrecedes(Array($1.utf8)) }
        guard attachmentPaths.allSatisfy({ Array("provenance.json".utf8).lexicographicallyPrecedes(Array($0.utf8)) && !$0.contains("..") }) else {
            throw KeyError("attachments must sort after provenance.json: \(attachmentPaths)")
        }
        guard Nonce.validate(inputs.nonce).isSuccess else { throw KeyError("invalid nonce '\(inputs.nonce)'") }
        let writer = try TarballWriter(path: output, mtime: inputs.sourceDateEpoch)
        var files: [Manifest.File] = []

        try writer.addDirectory("artifacts")
        let artifacts = try writer.addTreeWithModes(directory: artifactsDirectory, prefix: "artifacts/")
        for (path, entry) in artifacts {
            files.append(.init(path: path, sha256: entry.digest.sha256, size: entry.digest.size, mode: entry.executable ? "0755" : "0644"))
        }
        var byproducts = inputs.byproducts
        if !buildConfig.isEmpty {
            try writer.addDirectory("build-config")
            for name in buildConfig.keys.sorted(by: { Array($0.utf8).lexicographicallyPrecedes(Array($1.utf8)) }) {
                let digest = try writer.addFile("build-config/" + name, contentsOf: buildConfig[name]!)
                files.append(.init(path: "build-config/" + name, sha256: digest.sha256, size: digest.size, mode: "0644"))
                byproducts.append(ResourceDescriptor(name: "build-config/" + name, digest: ["sha256": digest.sha256]))
            }
        }
        if let buildLog {
            let digest = try writer.addFile("build.log", contentsOf: buildLog)
            files.append(.init(path: "build.log", sha256: digest.sha256, size: digest.size, mode: "0644"))
            byproducts.append(ResourceDescriptor(name: "build.log", digest: ["sha256": digest.sha256]))
        }

        for path in attachmentPaths {
            let digest = FileDigest.of(bytes: attachments[path]!)
            files.append(.init(path: path, sha256: digest.sha256, size: digest.size, mode: "0644"))
            byproducts.append(ResourceDescriptor(name: path, digest: ["sha256": digest.sha256]))
        }

        let subjects = artifacts.keys
            .sorted { Array($0.utf8).lexicographicallyPrecedes(Array($1.utf8)) }
            .map { ResourceDescriptor(name: $0, digest: ["sha256": artifacts[$0]!.digest.sha256]) }
        let statement = Statement(
            subject: subjects,
            predicate: SLSAProvenance(
                buildDefinition: .init(
                    buildType: inputs.buildType, externalParameters: inputs.externalParameters,
                    internalParameters: inputs.internalParameters, resolvedDependencies: inputs.resolvedDependencies),
                runDetails: .init(
                    builder: .init(
                        id: inputs.builderID, version: inputs.builderVersion,
                        builderDependencies: inputs.builderDependencies.isEmpty ? nil : inputs.builderDependencies),
                    metadata: .init(
                        invocationId: inputs.jobID, startedOn: Timestamp.string(inputs.startedOn),
                        finishedOn: Timestamp.string(inputs.finishedOn)),
                    byproducts: byproducts)))
        let provenance = try CanonicalJSON.encode(statement)
        let provenanceDigest = FileDigest.of(bytes: provenance)
        files.append(.init(path: "provenance.json", sha256: provenanceDigest.sha256, size: provenanceDigest.size, mode: "0644"))
        let manifest = try CanonicalJSON.encode(Manifest(jobID: inputs.jobID, files: files, inputs: inputs.manifestInputs))
        let evidence = try makeEvidence(provenance: provenance, manifest: manifest, nonce: inputs.nonce, jobID: inputs.jobID)

        try writer.addFile("evidence.json", data: evidence)
        try writer.addFile("manifest.json", data: manifest)
        try writer.addFile("provenance.json", data: provenance)
        var directories: Set<String> = []
        for path in attachmentPaths {
            let directory = path.split(separator: "/").dropLast().joined(separator: "/")
            if !directory.isEmpty, directories.insert(directory).inserted { try writer.addDirectory(directory) }
            try writer.addFile(path, data: attachments[path]!)
        }
        try writer.finish()
        return Output(
            tarball: try FileDigest.of(file: output), artifacts: artifacts.mapValues(\.digest),
            provenance: provenance, manifest: manifest, evidence: evidence)
    }

    /// Signs provenance.json (DSSE), binds it, the manifest and the nonce into report_data, asks
    /// the evidence provider for a report over it, then signs the claims (binding, TEE kind, report
    /// digest) in a second envelope.
    public func makeEvidence(provenance: [UInt8], manifest: [UInt8], nonce: String, jobID: String) throws -> [UInt8] {
        let envelope = try DSSEEnvelope.sign(payload: provenance, key: key)
        let binding = Binding(
            nonce: nonce, provenanceSha256: FileDigest.of(bytes: provenance).sha256,
            manifestSha256: FileDigest.of(bytes: manifest).sha256, publicKey: key.publicKey.hex)
        let reportData = try binding.reportData()
        let report = try evidenceProvider.report(reportData: reportData)
        let claims = try EvidenceClaims(
            jobID: jobID, tee: report.tee, provider: report.provider, report: report.report, aux: report.aux,
            reportData: reportData.hexString, binding: binding, certificate: certificate)
        let claimsEnvelope = try DSSEEnvelope.sign(payload: try CanonicalJSON.encode(claims), payloadType: EvidenceClaims.payloadType, key: key)
        let evidence = Evidence(
            dsse: envelope, claims: claimsEnvelope, tee: report.tee, provider: report.provider,
            report: report.report.map { Data($0).base64EncodedString() },
            aux: report.aux.map { Data($0).base64EncodedString() },
            reportData: reportData.hexString, binding: binding, certificate: certificate)
        return try CanonicalJSON.encode(evidence)
    }
}

extension Result {
    var isSuccess: Bool {
        if case .success = self { return true }
        return false
    }
}
