import Crypto
import Foundation
import KilnArchive
import KilnCore

/// The project as the dependency-only step sees it (#31 item 3, cargo-chef's idea): every manifest of
/// the workspace and its `Cargo.lock` byte for byte, and every target's source file (libraries, binaries,
/// build scripts, proc macros) replaced by an empty stub. Compiling it runs the registry crates' code
/// — their build scripts and proc macros, locked and checksum-verified — and none of the user's: no
/// source, no build script, no `.cargo/config.toml`.
///
/// Built from `cargo metadata --no-deps` (which reads manifests and runs nothing) and written by the
/// host into a fresh directory it made itself, at relative paths it checked: nothing the user sent
/// is followed.
struct DependencySkeleton: Sendable, Equatable {
    /// Relative path → contents (manifests copied, stubs written).
    var files: [String: [UInt8]]
    /// Names of the workspace's own packages.
    var packages: Set<String>

    static let stubBinary = Array("fn main() {}\n".utf8)

    /// From `cargo metadata --format-version 1 --no-deps` output, reading manifests through `tree`.
    static func make(metadata: [UInt8], tree: ConfinedDirectory, sandboxRoot: String = Sandbox.sourcePath) throws -> DependencySkeleton {
        guard let object = try? JSONSerialization.jsonObject(with: Data(metadata)) as? [String: Any],  // unreadable: refused below
            let packages = object["packages"] as? [[String: Any]], let root = object["workspace_root"] as? String
        else { throw DependencyCacheError("cargo metadata's output is not the expected JSON") }
        var files: [String: [UInt8]] = [:]
        var names: Set<String> = []
        func relative(_ path: String) throws -> String {
            guard path.hasPrefix(sandboxRoot + "/") else { throw DependencyCacheError("\(path.prefix(200)) is outside the project") }
            let rest = String(path.dropFirst(sandboxRoot.count + 1))
            let parts = rest.split(separator: "/", omittingEmptySubsequences: false)
            guard !parts.isEmpty, parts.count <= 32, parts.allSatisfy({ !$0.isEmpty && $0 != "." && $0 != ".." && $0.utf8.count <= 255 }) else {
                throw DependencyCacheError("\(path.prefix(200)) is not a plain path inside the project")
            }
            return rest
        }
        func copy(_ path: String) throws {
            let rel = try relative(path)
            guard files[rel] == nil else { return }
            do { files[rel] = try tree.openFile(rel, maxBytes: 1 << 20).readAll() } catch {
                throw DependencyCacheError("cannot read \(rel): \(error)")
            }
        }
        guard packages.count <= 1000 else { throw DependencyCacheError("more than 1000 workspace packages") }
        for package in packages {
            guard let name = package["name"] as? String, let manifest = package["manifest_path"] as? String, let targets = package["targets"] as? [[String: Any]]
            else { throw DependencyCacheError("cargo metadata names a package without a name, manifest or targets") }
            names.insert(name)
            try copy(manifest)
            for target in targets {
                guard let source = target["src_path"] as? String, let kinds = target["kind"] as? [String] else { continue }
                let rel = try relative(source)
                guard files[rel] == nil else { continue }
                let library = kinds.contains { ["lib", "rlib", "dylib", "cdylib", "staticlib", "proc-macro"].contains($0) }
                files[rel] = library ? [] : stubBinary
            }
        }
        try copy(root + "/Cargo.toml")
        try copy(root + "/Cargo.lock")
        return DependencySkeleton(files: files, packages: names)
    }

    /// Writes the files under `directory`, which must not exist yet (created here, so every
    /// directory on the way is one this process made).
    func write(to directory: String) throws {
        let fm = FileManager.default
        try fm.createDirectory(atPath: directory, withIntermediateDirectories: false, attributes: [.posixPermissions: 0o755])
        for (path, bytes) in files.sorted(by: { $0.key < $1.key }) {
            let parent = (path as NSString).deletingLastPathComponent
            if !parent.isEmpty { try fm.createDirectory(atPath: directory + "/" + parent, withIntermediateDirectories: true, attributes: [.posixPermissions: 0o755]) }
            guard fm.createFile(atPath: directory + "/" + path, contents: Data(bytes), attributes: [.posixPermissions: 0o644]) else {
                throw DependencyCacheError("cannot write \(path) of the dependency skeleton")
            }
        }
    }
}

/// What names one set of compiled dependencies: every input that changes what the compiler makes of
/// the registry crates. Two builds with equal keys may share compiled units; cargo's own fingerprints
/// still decide, unit by unit, whether a unit is fresh (a key that says too little costs a
/// recompilation, never a wrong unit).
struct DependencyCacheKey: Codable, Sendable, Equatable {
    var scheme = "kiln-dependency-cache-v1"
    /// SHA-256 of Cargo.lock and of every manifest (relative path → digest): versions, features,
    /// profiles.
    var lock: String
    var manifests: [String: String]
    /// `rustc -vV` and `cargo -V`, and the compiler binary's digest.
    var rustc: String
    var cargo: String
    var rustcDigest: String
    /// The cargo command line (profile, features, package, target) and the compiler flags.
    var arguments: [String]
    var environment: [String: String]
    /// Where the crates came from (the fetch service's verified registry, or an operator's mirror).
    var dependencySource: String

    enum CodingKeys: String, CodingKey {
        case scheme, lock, manifests, rustc, cargo, arguments, environment
        case rustcDigest = "rustc_digest"
        case dependencySource = "dependency_source"
    }

    var hex: String {
        // Canonical JSON of plain strings cannot fail to encode; a failure would be a programming error.
        let bytes = (try? JSONEncoder.sortedKeys.encode(self)) ?? Data()
        assert(!bytes.isEmpty, "the dependency key must encode")
        return SHA256.hash(data: bytes).hexString
    }
}

extension JSONEncoder {
    static var sortedKeys: JSONEncoder {
        let encoder = JSONEncoder()
        encoder.outputFormatting = [.sortedKeys, .withoutEscapingSlashes]
        return encoder
    }
}
