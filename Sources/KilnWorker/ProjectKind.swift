import Foundation

/// Which toolchain builds a project (design §5 step 2).
public enum ProjectKind: String, Sendable, Equatable {
    case cargo
    case nixFlake = "nix-flake"
    case nix

    /// Looks at the project root: `Cargo.toml` → Cargo (workspaces included), `flake.nix` → `nix build`,
    /// `default.nix` → `nix-build`.
    public static func detect(root: String) throws(BuildFailure) -> ProjectKind {
        let fm = FileManager.default
        if fm.fileExists(atPath: root + "/Cargo.toml") { return .cargo }
        if fm.fileExists(atPath: root + "/flake.nix") { return .nixFlake }
        if fm.fileExists(atPath: root + "/default.nix") { return .nix }
        let top = ((try? fm.contentsOfDirectory(atPath: root)) ?? []).sorted().prefix(10).joined(separator: ", ")
        throw .detect("no Cargo.toml, flake.nix or default.nix at the project root (found: \(top.isEmpty ? "nothing" : top))")
    }
}
