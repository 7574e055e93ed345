import Foundation
import KilnArchive

/// What built the builder, for the provenance's `builder.version`: Kiln's version, the SHA-256 of
/// the running kiln-worker executable (a fact the process can establish about itself), and the
/// source commit it was built from when `make` stamped one beside the executable
/// (`kiln-source.json`, written by scripts/stamp-source.sh; "unknown" for a bare `swift build`).
public struct BuilderIdentity: Sendable {
    public var version: [String: String]

    public static let current = BuilderIdentity(executable: "/proc/self/exe")

    init(executable: String) {
        var v = ["kiln-worker": KilnWorkerVersion.string]
        let resolved = (try? FileManager.default.destinationOfSymbolicLink(atPath: executable)) ?? executable
        v["kiln-worker-sha256"] = (try? FileDigest.of(file: resolved).sha256) ?? "unknown"
        let stamp = URL(fileURLWithPath: resolved).deletingLastPathComponent().appendingPathComponent("kiln-source.json").path
        if let data = FileManager.default.contents(atPath: stamp),
            let object = try? JSONSerialization.jsonObject(with: data) as? [String: Any],
            let commit = object["commit"] as? String, commit.utf8.count == 40, commit.utf8.allSatisfy({ ($0 >= 48 && $0 <= 57) || ($0 >= 97 && $0 <= 102) })
        {
            v["kiln-source-commit"] = commit
            v["kiln-source-dirty"] = (object["dirty"] as? Bool ?? true) ? "true" : "false"
        } else {
            v["kiln-source-commit"] = "unknown"
        }
        version = v
    }
}
