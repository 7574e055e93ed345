import Foundation
import KilnArchive
import KilnAttestation
import KilnCore
import KilnMessages

extension BuildPipeline {
    /// A rebuild (#14): fetches the original result from the gateway, sets its artifacts beside this
    /// build's, and returns the signed comparison (a DSSE envelope over an in-toto statement) that
    /// goes into this result as `rebuild/comparison.json`.
    ///
    /// The original is untrusted input like any archive: it is extracted by `ArchiveExtractor` and
    /// read only through `ConfinedDirectory` (no link followed). The comparison states the digests the
    /// worker computed from the bytes it compared, so a verifier holding the original can check they
    /// are the original's signed subjects.
    func compare(artifacts: String, with original: BuildRequest.OriginalResult, note: @escaping @Sendable (String) -> Void) async throws -> [UInt8] {
        let maxBytes = configuration.limits.maxArtifactBytes
        guard original.size > 0, original.size <= maxBytes, original.chunkSize > 0, original.chunkSize <= 64 << 20 else {
            throw BuildFailure(
                phase: "attest", message: "the original result (\(original.size) bytes) is beyond what this worker compares",
                suggestedAction: "rebuild a smaller result, or compare the two results yourself")
        }
        note("comparing with the original result of build \(original.buildID) (\(original.size) bytes)")
        let bytes = try await fetchChunks(size: original.size, chunkSize: original.chunkSize, sha256: original.sha256, blob: "original") {
            BuildFailure(phase: "attest", message: "cannot fetch the original result to compare with: \($0)", retryable: true, suggestedAction: "rebuild again")
        }
        let tarball = scratch + "/original.tar.gz"
        let unpacked = scratch + "/original"
        let fm = FileManager.default
        // Scratch cleanup inside the job's own workspace, removed with it anyway.
        try? fm.removeItem(atPath: unpacked)
        try fm.createDirectory(atPath: unpacked, withIntermediateDirectories: true, attributes: [.posixPermissions: 0o700])
        defer {
            // Scratch cleanup inside the job's own workspace, removed with it anyway.
            try? fm.removeItem(atPath: unpacked)
            // Scratch cleanup inside the job's own workspace, removed with it anyway.
            try? fm.removeItem(atPath: tarball)
        }
        do {
            try Data(bytes).write(to: URL(fileURLWithPath: tarball))
            _ = try ArchiveExtractor(
                configuration: .init(
                    maxEntries: configuration.limits.archive.maxEntries, maxTotalBytes: maxBytes,
                    maxCompressionRatio: configuration.limits.archive.maxRatio)
            ).extract(archivePath: tarball, into: unpacked)
        } catch {
            throw BuildFailure(phase: "attest", message: "the original result cannot be unpacked: \(error)", suggestedAction: "rebuild a result Kiln produced")
        }
        let compared: [RebuildComparison.Artifact]
        do {
            let root = try ConfinedDirectory(path: unpacked)
            let originalArtifacts = try root.kind(of: "artifacts") == .directory ? try root.subdirectory("artifacts") : nil
            compared = try RebuildComparison.compare(original: originalArtifacts, rebuilt: try ConfinedDirectory(path: artifacts), maxFileBytes: maxBytes)
        } catch {
            throw BuildFailure(phase: "attest", message: "cannot read the artifacts to compare: \(error)", suggestedAction: "rebuild again")
        }
        let comparison = RebuildComparison(
            originalBuildID: original.buildID, originalResultSha256: original.sha256, rebuildBuildID: request.jobID,
            nonce: request.nonce, reproducible: !compared.isEmpty && compared.allSatisfy { $0.verdict == .identical }, artifacts: compared)
        for artifact in compared {
            var line = "\(artifact.name): \(artifact.verdict.rawValue)"
            if let offset = artifact.firstDifferenceOffset { line += ", first difference at byte \(offset)" }
            if let sections = artifact.differingSections { line += sections.isEmpty ? "" : ", sections \(sections.joined(separator: " "))" }
            if let causes = artifact.causeCrates, !causes.isEmpty { line += ", likely from crate \(causes.prefix(3).joined(separator: " "))" }
            if let crates = artifact.differingCrates, !crates.isEmpty { line += ", \(crates.count) crates differ" }
            if let symbol = artifact.firstDifferenceSymbol { line += " (first in \(symbol))" }
            note(line)
        }
        note(
            comparison.reproducible
                ? "reproduced: every artifact is identical to the original's" : "NOT reproduced: \(comparison.differingArtifacts.joined(separator: ", ")) differ")
        self.comparison.withLock { $0 = comparison }
        do { return try comparison.signed(with: key) } catch {
            throw BuildFailure.internalError("attest", "cannot sign the comparison: \(error)")
        }
    }
}
