import Foundation
import KilnArchive
import NIOConcurrencyHelpers

/// Copies what a build produced out of its scratch tree, in the `package` phase, through
/// `ConfinedDirectory` only: every artifact and build-config file is opened beneath its root with no
/// link traversal, as the build's own uid, regular files only, size-limited. The copies (in
/// worker-owned directories the sandbox never sees) are all that attestation and packaging read.
struct OutputCollector {
    /// The roots a builder's paths are relative to.
    struct Roots {
        /// `/build/out` on the host.
        var output: ConfinedDirectory
        /// `/build/src` on the host.
        var source: ConfinedDirectory
        /// `/nix/store`, for Nix out-links (nil when Nix is not used).
        var nixStore: ConfinedDirectory?
    }

    var roots: Roots
    /// Largest single artifact or config file.
    var maxFileBytes: Int64
    /// Most files one build may ship.
    var maxFiles: Int
    /// Most bytes all artifacts and build-config files may add up to, counted by their apparent size
    /// before each is copied: the job's disk limit. The workspace's limit counts allocated blocks, so a
    /// sparse 1 GiB file fits in it; the host-side copy writes every byte (#29).
    var maxTotalBytes: Int64 = .max
    /// Bytes copied (or about to be) so far.
    private let copiedBytes = NIOLockedValueBox<Int64>(0)

    /// Turns what a builder reported into a path beneath a root, or fails naming it.
    func resolve(_ reported: ReportedArtifact) throws -> ArtifactSource {
        switch reported {
        case .sandboxPath(let path, let name):
            return try ArtifactSource.fromSandboxPath(path, name: name)
        case .nixOutLink(let link):
            let target = try open("Nix out-link '\(link)'") { try roots.output.linkTarget(link) }
            let relative = try ArtifactSource.relative(
                target, under: "/nix/store", what: "Nix out-link '\(link)'",
                outside: "points outside the Nix store", fix: "let nix-build create its own out-links")
            return ArtifactSource(root: .nixStore, relativePath: relative, name: link, expandDirectory: true)
        }
    }

    /// Copies every artifact into `artifactsDirectory` (under its name) and returns how many were copied.
    func collectArtifacts(_ reported: [ReportedArtifact], into artifactsDirectory: String, log: (String) -> Void) throws -> Int {
        var copied = 0
        var names = Set<String>()
        for source in try reported.map(resolve) {
            let root: ConfinedDirectory
            switch source.root {
            case .output: root = roots.output
            case .nixStore:
                guard let store = roots.nixStore else { throw BuildFailure.package("no Nix store is open to collect '\(source.name)' from") }
                root = store
            }
            switch try kind(source.relativePath, in: root, what: "artifact '\(source.name)'") {
            case .file:
                guard names.insert(source.name).inserted else { continue }
                copied += 1
                guard copied <= maxFiles else {
                    throw BuildFailure.package("the build produced more than \(maxFiles) artifacts", fix: "ship fewer files, or an archive of them")
                }
                try copy(source.relativePath, from: root, to: artifactsDirectory, as: source.name, what: "artifact '\(source.name)'")
            case .directory where source.expandDirectory:
                let dir = try open("artifact '\(source.name)'") { try root.subdirectory(source.relativePath) }
                let tree = try open("artifact '\(source.name)'") { try dir.walk(maxEntries: maxFiles * 4) }
                for (rel, kind) in tree {
                    switch kind {
                    case .file:
                        copied += 1
                        guard copied <= maxFiles else {
                            throw BuildFailure.package("the build produced more than \(maxFiles) artifacts", fix: "ship fewer files, or an archive of them")
                        }
                        try copy(rel, from: dir, to: artifactsDirectory, as: source.name + "/" + rel, what: "artifact '\(source.name)/\(rel)'")
                    case .symlink: log("not shipped: '\(source.name)/\(rel)' is a symbolic link")
                    case .directory: continue
                    case .other: log("not shipped: '\(source.name)/\(rel)' is not a regular file")
                    }
                }
            case .directory, .other:
                throw BuildFailure.package(
                    "artifact '\(source.name)' (\(source.relativePath)) is not a regular file",
                    fix: "make the build produce regular files as its outputs")
            case .symlink:
                throw BuildFailure.package(
                    "artifact '\(source.name)' (\(source.relativePath)) is a symbolic link; links are never followed",
                    fix: "make the build produce regular files as its outputs, not links")
            }
        }
        return copied
    }

    /// Copies the build-config files (paths relative to the source root) into `configDirectory` and
    /// returns name → copy. A link, FIFO or device where one should be fails the job.
    func collectBuildConfig(_ names: [String], into configDirectory: String) throws -> [String: String] {
        var out: [String: String] = [:]
        for name in names {
            let destination = configDirectory + "/" + name.replacingOccurrences(of: "/", with: "_")
            try copy(name, from: roots.source, to: configDirectory, as: name.replacingOccurrences(of: "/", with: "_"), what: "build-config file '\(name)'")
            out[name] = destination
        }
        return out
    }

    private func kind(_ path: String, in root: ConfinedDirectory, what: String) throws -> ConfinedDirectory.EntryKind {
        try open(what) { try root.kind(of: path) }
    }

    private func copy(_ relative: String, from root: ConfinedDirectory, to directory: String, as name: String, what: String) throws {
        let destination = directory + "/" + name
        try FileManager.default.createDirectory(atPath: (destination as NSString).deletingLastPathComponent, withIntermediateDirectories: true)
        let file = try open(what) { try root.openFile(relative, maxBytes: maxFileBytes) }
        let total = copiedBytes.withLockedValue { total -> Int64 in
            total += file.size
            return total
        }
        guard total <= maxTotalBytes else {
            throw BuildFailure.package(
                "the build's outputs add up to more than its disk limit of \(maxTotalBytes >> 20) MiB at \(what) (\(file.size) bytes; a sparse file counts in full: it is copied in full)",
                fix: "ship smaller outputs, or ask for a larger build_config.disk_mb")
        }
        do { try file.copy(to: destination) } catch let e as ConfinedDirectory.Error {
            throw Self.failure(e, what: what)
        }
    }

    private func open<T>(_ what: String, _ body: () throws -> T) throws -> T {
        do { return try body() } catch let e as ConfinedDirectory.Error { throw Self.failure(e, what: what) }
    }

    static func failure(_ e: ConfinedDirectory.Error, what: String) -> BuildFailure {
        switch e.kind {
        case .link:
            return .package(
                "\(what) is, or is reached through, a symbolic link ('\(e.path)'); links are never followed",
                fix: "do not replace build inputs or outputs with links")
        case .notRegularFile:
            return .package("\(what) is not a regular file ('\(e.path)': \(e.detail))", fix: "do not replace build inputs or outputs with special files")
        case .invalidPath:
            return .package("\(what) has a path outside the build tree ('\(e.path)': \(e.detail))", fix: "do not report paths outside the build's output directory")
        case .notFound:
            return .package("\(what) is missing ('\(e.path)')", fix: "do not delete build inputs or outputs during the build")
        case .tooLarge:
            return .package("\(what) is too large (\(e.detail))", fix: "ship smaller files or ask the operator for a larger limit")
        case .io:
            return .package("\(what) cannot be read ('\(e.path)': \(e.detail))", fix: "make build outputs readable by the build user")
        }
    }
}

/// What a builder saw of an artifact, as the toolchain said it (build-controlled, unchecked until
/// the `package` phase).
public enum ReportedArtifact: Sendable, Equatable {
    /// A path inside the sandbox (`/build/out/…`), e.g. from cargo's JSON messages.
    case sandboxPath(String, name: String)
    /// An out-link's name in `/build/out` (`result`, `result-dev`); its target must be in /nix/store.
    case nixOutLink(String)
}

/// One artifact: a path relative to a root it names.
struct ArtifactSource: Sendable, Equatable {
    enum Root: Sendable, Equatable { case output, nixStore }
    var root: Root
    var relativePath: String
    /// Its path under `artifacts/` in the result.
    var name: String
    /// A directory is shipped file by file (Nix outputs); otherwise only a regular file is accepted.
    var expandDirectory: Bool

    init(root: Root, relativePath: String, name: String, expandDirectory: Bool = false) {
        self.root = root
        self.relativePath = relativePath
        self.name = name
        self.expandDirectory = expandDirectory
    }

    /// A path a toolchain reported inside the sandbox (`/build/out/…`), made relative to the output
    /// root — checked, never concatenated to a host path.
    static func fromSandboxPath(_ sandboxPath: String, name: String) throws -> ArtifactSource {
        let relative = try relative(
            sandboxPath, under: Sandbox.outputPath, what: "artifact '\(name)'",
            outside: "was reported outside \(Sandbox.outputPath)",
            fix: "do not print fake compiler messages from build scripts or proc-macros")
        return ArtifactSource(root: .output, relativePath: relative, name: name)
    }

    /// `path` made relative to the absolute directory `root`: it must start with `root/`, and what
    /// follows must be a plain relative path (no `..`, no NUL), or the job fails in `package`.
    static func relative(_ path: String, under root: String, what: String, outside: String, fix: String) throws -> String {
        let prefix = root + "/"
        guard path.hasPrefix(prefix) else { throw BuildFailure.package("\(what) \(outside) ('\(path)')", fix: fix) }
        let relative = String(path.dropFirst(prefix.count))
        do { _ = try ConfinedDirectory.components(of: relative) } catch {
            throw OutputCollector.failure(error, what: what)
        }
        return relative
    }
}
