import Crypto
import Foundation
import KilnCore
import KilnMessages

/// The fetch phase of a Cargo build: every registry crate `Cargo.lock` pins comes from the farm's
/// fetch service over the bus (`FetchClient`), is checked against the lock file's SHA-256, and is laid
/// out as a local registry (index lines + `.crate` files) that the build phase mounts read-only and
/// uses offline. The worker never reaches a registry itself, and cargo checks each crate against the
/// lock file once more when it unpacks it.
///
/// The host only hashes and copies crate files; it never unpacks them (that is cargo's job, inside the
/// sandbox).
struct CargoFetcher {
    /// crates.io's `Cargo.lock` source: what a registry (or its mirror) must provide.
    static let cratesIO = "registry+https://github.com/rust-lang/crates.io-index"

    let fetch: FetchClient
    /// The build's `skip_cache`: every crate downloaded again by the fetch service.
    var skipCache = false

    typealias Summary = CacheSummary

    /// The registry crates of `lock`, or a fetch failure naming the first package Kiln cannot fetch.
    static func registryPackages(_ lock: CargoLock) throws -> [LockedCrate] {
        var out: [LockedCrate] = []
        for p in lock.packages {
            guard let source = p.source else { continue }  // the project's own packages
            guard source == cratesIO else {
                throw BuildFailure(
                    phase: "fetch", message: "\(p.name) \(p.version) comes from \(source), which this farm does not fetch (only crates.io through its registry)",
                    suggestedAction: "depend on crates.io releases, or vendor the dependency into the project (cargo vendor)")
            }
            guard FetchNames.isValidCrateName(p.name), FetchNames.isValidVersion(p.version) else {
                throw BuildFailure(phase: "fetch", message: "Cargo.lock names a package Kiln refuses: '\(p.name)' '\(p.version)'", suggestedAction: "fix Cargo.lock")
            }
            guard let checksum = p.checksum, Hex.isLowercase(checksum, bytes: 32) else {
                throw BuildFailure(
                    phase: "fetch",
                    message: "Cargo.lock has no checksum for \(p.name) \(p.version) (a lock made against a local or vendored registry pins none)",
                    suggestedAction:
                        "regenerate Cargo.lock against crates.io; an operator serving a directory of crates gives it to kiln-worker --cargo-vendor, not to --cargo-registry"
                )
            }
            out.append(LockedCrate(name: p.name, version: p.version, sha256: checksum))
        }
        return out
    }

    /// A fetch service refusal or failure as the build reports it, naming the input.
    static func failure(_ error: FetchClient.Failure, _ what: String) -> BuildFailure {
        BuildFailure(
            phase: "fetch", message: "\(what): \(error.message)", retryable: error.retryable,
            suggestedAction: error.retryable
                ? "retry later; if it persists, the farm operator should check kiln-fetch and its registry"
                : "check Cargo.lock against the registry; the farm operator should check the registry mirror")
    }

    /// Fetches every package into a local registry at `directory` (created here, world-readable so the
    /// build's uid can read it through its read-only mount).
    func fetch(_ packages: [LockedCrate], into directory: String, log: (String) -> Void) async throws -> Summary {
        var summary = Summary()
        var indexFiles: [String: [String]] = [:]
        let fm = FileManager.default
        try fm.createDirectory(atPath: directory + "/index", withIntermediateDirectories: true, attributes: [.posixPermissions: 0o755])
        do { try await fetch.file(packages) } catch let error as FetchClient.Failure { throw Self.failure(error, "the fetch service refused this lock") }
        for p in packages {
            summary.crates += 1
            let bytes: [UInt8]
            let line: String
            do {
                let (crate, cache) = try await fetch.crate(p, fresh: skipCache)
                bytes = crate
                line = try await fetch.indexLine(p)
                if cache == "evicted" { summary.evicted += 1 }
                if cache == "hit" {
                    summary.hits += 1
                    summary.bytesFromCache += Int64(bytes.count)
                } else {
                    summary.misses += 1
                    summary.bytesFetched += Int64(bytes.count)
                }
            } catch let error as FetchClient.Failure {
                throw Self.failure(error, "cannot fetch \(p.name) \(p.version)")
            }
            let file = directory + "/" + p.name + "-" + p.version + ".crate"
            guard fm.createFile(atPath: file, contents: Data(bytes), attributes: [.posixPermissions: 0o644]) else {
                throw BuildFailure.internalError("fetch", "cannot write \(file)")
            }
            indexFiles[FetchNames.indexPath(p.name), default: []].append(line)
        }
        for (path, lines) in indexFiles {
            let file = directory + "/index/" + path
            try fm.createDirectory(
                atPath: (file as NSString).deletingLastPathComponent, withIntermediateDirectories: true, attributes: [.posixPermissions: 0o755])
            guard fm.createFile(atPath: file, contents: Data((lines.joined(separator: "\n") + "\n").utf8), attributes: [.posixPermissions: 0o644]) else {
                throw BuildFailure.internalError("fetch", "cannot write \(file)")
            }
        }
        return summary
    }
}
