import Foundation
import KilnArchive
import KilnCore

/// What built the builder, for the provenance's `builder.version`: Kiln's release, the SHA-256 of
/// the running kiln-worker executable (a fact the process can establish about itself), and the
/// source commit it was built from when `make` stamped one beside the executable (`KilnVersion`;
/// "unknown" for a bare `swift build`).
public struct BuilderIdentity: Sendable {
    public var version: [String: String]

    public static let current = BuilderIdentity(executable: "/proc/self/exe")

    /// `digestCache`: the executable's digest is remembered across one-shot workers (it is the same
    /// file for every build a host runs).
    init(executable: String, digestCache: FileDigestCache? = nil) {
        let kiln = KilnVersion(executable: executable)
        var v = ["kiln-worker": kiln.release]
        let resolved = (try? FileManager.default.destinationOfSymbolicLink(atPath: executable)) ?? executable
        // "unknown" rather than a wrong digest if the executable cannot be read.
        let digest = try? (digestCache.map { try $0.digest(of: resolved).0 } ?? FileDigest.of(file: resolved))
        v["kiln-worker-sha256"] = digest?.sha256 ?? "unknown"
        v["kiln-source-commit"] = kiln.commit ?? "unknown"
        if let dirty = kiln.dirty { v["kiln-source-dirty"] = dirty ? "true" : "false" }
        version = v
    }
}
