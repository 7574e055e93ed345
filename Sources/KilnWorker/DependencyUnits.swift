import Foundation
import KilnArchive
import Synchronization

/// Which of a Cargo target directory's compilation units belong to registry crates, read from
/// cargo's own JSON messages of the dependency-only step (#31 item 3).
///
/// Why positive selection by cargo's report, not by file name: a unit of the user's own (stubbed)
/// crates left in a cache entry would be taken as fresh by a later build — its fingerprint checks the
/// source files' times, and an archive's are old — and the stub would be linked into the artifact.
/// Only units cargo named as coming from a registry package (`registry+…` package ids) are kept, and
/// never one whose hash cargo also reported for a path package.
///
/// Bounded: the step runs registry code, which can print fake cargo messages by the hundred thousand
/// (the hostile table's attack on the artifact collector). Past `limit` hashes and package ids in all,
/// nothing more is kept and the step is not cached (`overflowed`).
final class DependencyUnits: Sendable {
    private let state = Mutex<(registry: Set<String>, path: Set<String>, other: Set<String>, overflowed: Bool)>(([], [], [], false))
    let limit: Int

    init(limit: Int = 100_000) { self.limit = limit }

    /// More units were reported than `limit`: the step is not cached.
    var overflowed: Bool { state.withLock { $0.overflowed } }

    /// Reads one line of `cargo build --message-format=json` output (other lines are ignored).
    func consider(jsonLine line: String) {
        guard let object = try? JSONSerialization.jsonObject(with: Data(line.utf8)) as? [String: Any],  // not a message: ignored
            let reason = object["reason"] as? String, let packageID = object["package_id"] as? String
        else { return }
        var paths: [String] = []
        switch reason {
        case "compiler-artifact": paths = (object["filenames"] as? [String]) ?? []
        case "build-script-executed": paths = [(object["out_dir"] as? String) ?? ""]
        default: return
        }
        let hashes = paths.compactMap(Self.unitHash(ofPath:))
        let origin = Self.origin(of: packageID)
        state.withLock {
            guard !$0.overflowed else { return }
            guard $0.registry.count + $0.path.count + $0.other.count + hashes.count < limit else {
                $0.overflowed = true
                return
            }
            switch origin {
            case .registry: $0.registry.formUnion(hashes)
            case .path: $0.path.formUnion(hashes)
            case .other: $0.other.insert(packageID)
            }
        }
    }

    enum Origin { case registry, path, other }

    /// `registry+https://…#name@1.0` (cargo ≥ 1.77) or `name 1.0 (registry+https://…)` (older).
    static func origin(of packageID: String) -> Origin {
        if packageID.hasPrefix("registry+") || packageID.contains("(registry+") || packageID.hasPrefix("sparse+") || packageID.contains("(sparse+") {
            return .registry
        }
        if packageID.hasPrefix("path+") || packageID.contains("(path+") { return .path }
        return .other
    }

    /// Unit hashes of registry crates, none of which cargo also reported for a path package.
    var registryUnits: Set<String> { state.withLock { $0.registry.subtracting($0.path) } }
    /// Package ids that are neither registry nor path packages (git): the step is not cacheable.
    var otherPackages: Set<String> { state.withLock { $0.other } }

    /// The 16-hex-digit unit hash in a target-directory path: the component after `deps`, `build`
    /// or `.fingerprint`, as `lib<name>-<hash>.rlib`, `<name>-<hash>`, `<name>-<hash>.d`.
    static func unitHash(ofPath path: String) -> String? {
        let parts = path.split(separator: "/")
        guard let at = parts.lastIndex(where: { $0 == "deps" || $0 == "build" || $0 == ".fingerprint" }), at + 1 < parts.count else { return nil }
        return unitHash(ofName: parts[at + 1])
    }

    static func unitHash(ofName name: Substring) -> String? {
        guard let dash = name.lastIndex(of: "-") else { return nil }
        let rest = name[name.index(after: dash)...]
        let hash = rest.prefix(16)
        guard hash.count == 16, hash.utf8.allSatisfy({ ($0 >= 48 && $0 <= 57) || ($0 >= 97 && $0 <= 102) }) else { return nil }
        let after = rest.dropFirst(16)
        guard after.isEmpty || after.hasPrefix(".") else { return nil }
        return String(hash)
    }

    /// What to pack from a target directory (a confined view: nothing is followed): every directory
    /// on the way to a kept unit and every file of a kept unit, in a stable order. Throws on a link or
    /// special file inside a kept unit (a registry build script that made one: the step is not cached).
    static func selection(in target: ConfinedDirectory, keep: Set<String>, maxEntries: Int) throws -> [(path: String, kind: ConfinedDirectory.EntryKind)] {
        var out: [(String, ConfinedDirectory.EntryKind)] = []
        var directories: Set<String> = []
        for (path, kind) in try target.walk(maxEntries: maxEntries) {
            let parts = path.split(separator: "/")
            guard let at = parts.firstIndex(where: { $0 == "deps" || $0 == "build" || $0 == ".fingerprint" }), at >= 1, at <= 3, at + 1 < parts.count,
                let hash = unitHash(ofName: parts[at + 1]), keep.contains(hash)
            else { continue }
            if kind == .symlink || kind == .other { throw DependencyCacheError("the dependency step left \(path) as a link or special file") }
            // Parents first (each once): the archive recreates the layout.
            var parent = ""
            for component in parts.dropLast() {
                parent = parent.isEmpty ? String(component) : parent + "/" + component
                if directories.insert(parent).inserted { out.append((parent, .directory)) }
            }
            if kind == .file {
                out.append((path, .file))
            } else if directories.insert(path).inserted {
                out.append((path, .directory))
            }
        }
        return out
    }
}

/// Why a build used no compiled-dependency entry, or could not store one (logged and recorded in the
/// provenance; the build itself goes on without the cache).
struct DependencyCacheError: Error, CustomStringConvertible {
    let description: String
    init(_ description: String) { self.description = description }
}
