import Foundation

/// Which Kiln a process is: the release every executable shares, and the source commit it was built
/// from when `make` stamped one beside the executables (`kiln-source.json`, written by
/// scripts/stamp-source.sh; a bare `swift build` has none). Shown by `--version`, announced by the
/// broker, and recorded by the worker in every provenance.
public struct KilnVersion: Sendable, Equatable, CustomStringConvertible {
    /// The release, changed by hand when the wire or the evidence format changes.
    public static let release = "0.1.0"

    /// This process's version, from the executable `/proc/self/exe` names.
    public static let current = KilnVersion(executable: "/proc/self/exe")

    public var release: String
    /// 40 lowercase hex digits, or nil when no stamp was found (or it was malformed).
    public var commit: String?
    /// Whether the work tree had uncommitted changes when the stamp was written (true if unsaid).
    public var dirty: Bool?

    /// Reads the stamp beside `executable` (links resolved, so a symlinked binary finds its own).
    public init(executable: String) {
        release = Self.release
        let resolved = (try? FileManager.default.destinationOfSymbolicLink(atPath: executable)) ?? executable
        let stamp = URL(fileURLWithPath: resolved).deletingLastPathComponent().appendingPathComponent("kiln-source.json").path
        guard let data = FileManager.default.contents(atPath: stamp), data.count < 4096,
            let object = try? JSONSerialization.jsonObject(with: data) as? [String: Any],
            let commit = object["commit"] as? String, Hex.isLowercase(commit, bytes: 20)
        else { return }
        self.commit = commit
        dirty = object["dirty"] as? Bool ?? true
    }

    /// `0.1.0 (3f2a9c1…, modified)`
    public var description: String {
        guard let commit else { return release + " (unstamped build)" }
        return release + " (" + commit.prefix(12) + (dirty == false ? "" : ", modified") + ")"
    }
}
