import ArgumentParser
import Foundation
import KilnArchive
import KilnAttestation
import KilnCore

extension VerifyCommand {
    /// `kiln verify --rebuilt`: the rebuild result as usual, then its signed comparison; with
    /// `--original`, the original result as well (its own nonce, from its manifest: what matters for
    /// the original is who signed it, not that it is fresh).
    func verifyRebuild(options: ResultVerifier.Options) throws {
        let scratch = FileManager.default.temporaryDirectory.appendingPathComponent("kiln-verify-\(UUID().uuidString)").path
        defer { try? FileManager.default.removeItem(atPath: scratch) }
        let root = try Self.unpacked(result, into: scratch + "/rebuild")
        let report = ResultVerifier(options: options).appraise(path: root)
        guard report.ok else {
            FileHandle.standardError.write(Data("verification FAILED at \(report.failedStep?.rawValue ?? "?"): \(report.error ?? "")\n".utf8))
            throw ExitCode(1)
        }
        let comparison: RebuildComparison
        do {
            comparison = try RebuildComparisonVerifier().verify(root: try ConfinedDirectory(path: root), report: report, expectedNonce: nonce)
            if let original {
                let originalRoot = try Self.unpacked(original, into: scratch + "/original")
                var originalOptions = options
                originalOptions.expectedNonce = try Self.manifestNonce(originalRoot)
                let originalReport = ResultVerifier(options: originalOptions).appraise(path: originalRoot)
                let digest = try FileDigest.of(file: original).sha256
                try RebuildComparisonVerifier().checkOriginal(comparison, tarballSha256: digest, report: originalReport)
            }
        } catch let error as VerificationError {
            FileHandle.standardError.write(Data("verification FAILED at \(error.step.rawValue): \(error.message)\n".utf8))
            throw ExitCode(1)
        }
        print(Self.summary(report))
        print(Self.describe(comparison, originalChecked: original != nil))
        if !comparison.reproducible { throw ExitCode(2) }
    }

    static func describe(_ c: RebuildComparison, originalChecked: Bool) -> String {
        var lines = [
            c.reproducible
                ? "REPRODUCED: every artifact is identical to the original's (build \(c.originalBuildID))"
                : "NOT REPRODUCED: \(c.differingArtifacts.count) of \(c.artifacts.count) artifact(s) differ from the original's (build \(c.originalBuildID))",
            "  original result sha256 \(c.originalResultSha256)" + (originalChecked ? " (the given original, verified)" : " (original not given: not checked)"),
        ]
        for a in c.artifacts {
            lines.append("  \(a.verdict.rawValue.padding(toLength: 17, withPad: " ", startingAt: 0))\(a.name)")
            if a.verdict == .identical {
                lines.append("      sha256 \(a.rebuilt?.sha256 ?? "?")")
                continue
            }
            if let o = a.original { lines.append("      original sha256 \(o.sha256) size \(o.size)") }
            if let r = a.rebuilt { lines.append("      rebuilt  sha256 \(r.sha256) size \(r.size)") }
            if let offset = a.firstDifferenceOffset { lines.append("      first difference at byte \(offset)") }
            if let sections = a.differingSections {
                lines.append("      ELF sections that differ: " + (sections.isEmpty ? "none (headers only)" : sections.joined(separator: " ")))
            }
            if let causes = a.causeCrates, !causes.isEmpty {
                lines.append("      the difference likely starts in crate: " + causes.joined(separator: " "))
            }
            if let resized = a.resizedSymbols, !resized.isEmpty {
                lines.append("      symbols of another size: " + resized.prefix(8).joined(separator: ", ") + (resized.count > 8 ? ", …" : ""))
            }
            if let crates = a.differingCrates, !crates.isEmpty {
                lines.append("      crates whose code or data differ (likely causes first): " + crates.joined(separator: " "))
            }
            if let symbol = a.firstDifferenceSymbol { lines.append("      first difference inside: \(symbol)") }
            if let symbols = a.differingSymbols, !symbols.isEmpty {
                lines.append("      differing symbols: " + symbols.prefix(8).joined(separator: ", ") + (symbols.count > 8 ? ", …" : ""))
            }
        }
        return lines.joined(separator: "\n")
    }

    /// A result directory as given, or a tarball unpacked (hostile-archive rules) into `directory`.
    static func unpacked(_ path: String, into directory: String) throws -> String {
        var isDirectory: ObjCBool = false
        guard FileManager.default.fileExists(atPath: path, isDirectory: &isDirectory) else { throw ValidationError("\(path) does not exist") }
        if isDirectory.boolValue { return path }
        try FileManager.default.createDirectory(atPath: directory, withIntermediateDirectories: true)
        do { _ = try ArchiveExtractor().extract(archivePath: path, into: directory) } catch {
            throw ValidationError("cannot unpack \(path): \(error)")
        }
        return directory
    }

    static func manifestNonce(_ root: String) throws -> String {
        guard let bytes = try? ConfinedDirectory(path: root).openFile("manifest.json", maxBytes: 16 << 20).readAll(),
            let manifest = try? JSONDecoder().decode(Manifest.self, from: Data(bytes))
        else { throw ValidationError("the original result has no readable manifest.json") }
        return manifest.inputs.nonce
    }
}
