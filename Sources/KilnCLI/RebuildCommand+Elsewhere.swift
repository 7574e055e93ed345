import ArgumentParser
import Foundation
import KilnArchive
import KilnAttestation
import KilnCore
import KilnMessages

extension RebuildCommand {
    /// A result this farm does not hold (built elsewhere, or past its retention here): submit the
    /// inputs its provenance names — the repository at the commit it built, or the archive given with
    /// `--source` (its SHA-256 must be the one the provenance names) — with the same build_config and
    /// build_options, then compare the two results here, the same way a rebuilding worker does. This
    /// comparison is the CLI's own, made from both results on this machine, so it is printed, not signed.
    func rebuildElsewhere(_ path: String, client: GatewayClient) async throws {
        let scratch = FileManager.default.temporaryDirectory.appendingPathComponent("kiln-rebuild-\(UUID().uuidString)").path
        defer { try? FileManager.default.removeItem(atPath: scratch) }
        let originalRoot = try VerifyCommand.unpacked(path, into: scratch + "/original")
        let original = try ConfinedDirectory(path: originalRoot)
        guard let provenanceBytes = try? original.openFile("provenance.json", maxBytes: 16 << 20).readAll(),
            let statement = try? JSONDecoder().decode(Statement.self, from: Data(provenanceBytes)),
            let manifestBytes = try? original.openFile("manifest.json", maxBytes: 16 << 20).readAll(),
            let manifest = try? JSONDecoder().decode(Manifest.self, from: Data(manifestBytes))
        else { throw CLIError("\(path) is not a Kiln result (no readable provenance.json and manifest.json)") }
        let inputs = statement.predicate.buildDefinition.externalParameters
        let nonce = options.nonce ?? Nonce.random()
        var body: [String: Any] = ["nonce": nonce]
        if let repository = inputs.repository {
            let commit = statement.predicate.buildDefinition.resolvedDependencies.lazy.compactMap { $0.digest?["gitCommit"] }.first { !$0.isEmpty }
            body["repo_url"] = repository
            body["repo_ref"] = commit ?? inputs.ref ?? "HEAD"
        } else if let expected = inputs.source?.digest?["sha256"] {
            guard let source else {
                throw CLIError("\(path) was built from an uploaded archive (sha256 \(expected)); give that archive with --source")
            }
            let bytes = Array(try Data(contentsOf: URL(fileURLWithPath: source)))
            guard FileDigest.of(bytes: bytes).sha256 == expected else {
                throw CLIError("\(source) is not the archive \(path) was built from (its sha256 is not \(expected))")
            }
            body["source_data"] = Data(bytes).base64EncodedString()
            body["source_name"] = inputs.source?.name ?? (source as NSString).lastPathComponent
        } else {
            throw CLIError("\(path)'s provenance names neither a repository nor a source archive")
        }
        if let config = inputs.buildConfig { body["build_config"] = try JSONSerialization.jsonObject(with: JSONEncoder().encode(config)) }
        if let buildOptions = inputs.buildOptions { body["build_options"] = try JSONSerialization.jsonObject(with: JSONEncoder().encode(buildOptions)) }
        let reply = try await client.send(.POST, "/build", body: Array(try JSONSerialization.data(withJSONObject: body)), contentType: "application/json")
        guard let id = reply["job_id"] as? String else { throw CLIError("unexpected gateway reply: \(reply)") }
        print("this farm does not hold job \(manifest.jobID): job \(id) rebuilds it from the inputs its provenance names; nonce \(nonce)")
        guard try await EventPrinter(client: client).follow(id) == "done" else { throw ExitCode(1) }
        let output = options.output ?? "\(id).tar.gz"
        let size = try await client.download(id, to: output)
        print("result \(output) (\(size) bytes)")

        let rebuiltRoot = try VerifyCommand.unpacked(output, into: scratch + "/rebuilt")
        let comparison = try Self.compare(
            original: original, rebuilt: try ConfinedDirectory(path: rebuiltRoot), originalBuildID: manifest.jobID,
            originalSha256: try FileDigest.of(file: path).sha256, rebuildBuildID: id, nonce: nonce)
        print(VerifyCommand.describe(comparison, originalChecked: false))
        print("compared here by this CLI (not signed); verify both results: kiln verify \(output) --nonce \(nonce) …, and the original with its nonce")
        if !comparison.reproducible { throw ExitCode(2) }
    }

    /// The artifacts of two unpacked results, compared file by file (read through the confined view).
    static func compare(
        original: ConfinedDirectory, rebuilt: ConfinedDirectory, originalBuildID: String, originalSha256: String, rebuildBuildID: String,
        nonce: String
    ) throws -> RebuildComparison {
        func artifacts(_ root: ConfinedDirectory) throws -> ConfinedDirectory? {
            // No readable artifacts/ directory: nothing to compare, said below.
            (try? root.kind(of: "artifacts")) == .directory ? try root.subdirectory("artifacts") : nil
        }
        let compared = try RebuildComparison.compare(original: try artifacts(original), rebuilt: try artifacts(rebuilt), maxFileBytes: 2 << 30)
        return RebuildComparison(
            originalBuildID: originalBuildID, originalResultSha256: originalSha256, rebuildBuildID: rebuildBuildID, nonce: nonce,
            reproducible: !compared.isEmpty && compared.allSatisfy { $0.verdict == .identical }, artifacts: compared)
    }
}
