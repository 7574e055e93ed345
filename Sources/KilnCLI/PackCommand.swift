import ArgumentParser
import Foundation
import KilnAttestation

/// Packages and signs a local directory of files exactly the way a worker packages a build.
/// No build happens; it exists so verifiers (ours and third-party ones) can be exercised offline.
struct PackCommand: AsyncParsableCommand {
    static let configuration = CommandConfiguration(
        commandName: "pack",
        abstract: "Package and sign a directory of artifacts as a Kiln result (no build; for testing verifiers).")

    @Argument(help: "Directory whose files become artifacts/.") var artifacts: String
    @Option(help: "Signing key file (created if missing).") var key: String
    @Option(help: "Nonce to bind (hex, at most 16 bytes).") var nonce: String
    @Option(name: .shortAndLong, help: "Output .tar.gz.") var output: String
    @Option(help: "A lockfile to ship under build-config/.") var lockfile: String?
    @Option(help: "Job id to record.") var jobID = "local"
    @Option(help: "configfs-tsm report directory; used when present.") var tsmRoot = TSMEvidenceProvider.defaultRoot

    func validate() throws {
        if case .failure(let e) = Nonce.validate(nonce) { throw ValidationError(e.description) }
    }

    func run() async throws {
        let signingKey = try SigningKey.loadOrCreate(at: key)
        let now = Date()
        let epoch = Int64(now.timeIntervalSince1970)
        let normalized = try Nonce.validate(nonce).get()
        let name = (artifacts as NSString).lastPathComponent
        let inputs = ResultBuilder.Inputs(
            jobID: jobID, nonce: normalized, buildType: "https://kiln.build/buildtypes/local-pack@v1",
            externalParameters: .init(source: ResourceDescriptor(name: name), nonce: normalized),
            internalParameters: ["command": "kiln pack"], resolvedDependencies: [],
            builderID: "https://kiln.build/cli/pack@v1", startedOn: now, finishedOn: now,
            manifestInputs: .init(source: name, nonce: normalized), sourceDateEpoch: epoch)
        var buildConfig: [String: String] = [:]
        if let lockfile { buildConfig[(lockfile as NSString).lastPathComponent] = lockfile }
        let out = try ResultBuilder(key: signingKey, evidenceProvider: EvidenceProviders.detect(tsmRoot: tsmRoot))
            .build(artifactsDirectory: artifacts, buildConfig: buildConfig, inputs: inputs, output: output)
        print("wrote \(output) (sha256 \(out.tarball.sha256), \(out.tarball.size) bytes, \(out.artifacts.count) artifact(s))")
    }
}
