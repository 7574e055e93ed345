import Foundation
import KilnArchive

/// Which toolchain builds a project (design §5 step 2).
public enum ProjectKind: String, Sendable, Equatable {
    case cargo
    case nixFlake = "nix-flake"
    case nix

    /// Looks at the project root: `Cargo.toml` → Cargo (workspaces included), `flake.nix` → `nix build`,
    /// `default.nix` → `nix-build`.
    public static func detect(_ root: ConfinedDirectory) throws(BuildFailure) -> ProjectKind {
        // Unreadable is as good as absent for telling the project's kind.
        func exists(_ name: String) -> Bool { (try? root.kind(of: name)) != nil }
        if exists("Cargo.toml") { return .cargo }
        if exists("flake.nix") { return .nixFlake }
        if exists("default.nix") { return .nix }
        let top = ((try? root.entries()) ?? []).map(\.name).prefix(10).joined(separator: ", ")
        throw .detect("no Cargo.toml, flake.nix or default.nix at the project root (found: \(top.isEmpty ? "nothing" : top))")
    }
}
