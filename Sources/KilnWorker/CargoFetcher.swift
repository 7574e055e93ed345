import AsyncHTTPClient
import Crypto
import Foundation
import KilnCore
import KilnMessages

/// The fetch phase of a Cargo build: every registry crate `Cargo.lock` pins is taken from the host's
/// verified cache or downloaded from the configured registry, checked against the lock file's
/// SHA-256, and laid out as a local registry (index lines + `.crate` files) that the build phase mounts
/// read-only and uses offline. The build itself never has network, and cargo checks each crate against
/// the lock file once more when it unpacks it.
///
/// The host only hashes and copies crate files; it never unpacks them (that is cargo's job, inside the
/// sandbox).
struct CargoFetcher {
    /// crates.io's `Cargo.lock` source: what a registry (or its mirror) must provide.
    static let cratesIO = "registry+https://github.com/rust-lang/crates.io-index"

    let registry: SparseRegistry
    let cache: CrateCache?
    let skipCache: Bool

    typealias Summary = CacheSummary

    /// The registry crates of `lock`, or a fetch failure naming the first package Kiln cannot fetch.
    static func registryPackages(_ lock: CargoLock) throws -> [CargoLock.Package] {
        var out: [CargoLock.Package] = []
        for p in lock.packages {
            guard let source = p.source else { continue }  // the project's own packages
            guard source == cratesIO else {
                throw BuildFailure(
                    phase: "fetch", message: "\(p.name) \(p.version) comes from \(source), which this farm does not fetch (only crates.io through its registry)",
                    suggestedAction: "depend on crates.io releases, or vendor the dependency into the project (cargo vendor)")
            }
            guard SparseRegistry.isValidCrateName(p.name), SparseRegistry.isValidVersion(p.version) else {
                throw BuildFailure(phase: "fetch", message: "Cargo.lock names a package Kiln refuses: '\(p.name)' '\(p.version)'", suggestedAction: "fix Cargo.lock")
            }
            guard let checksum = p.checksum, Hex.isLowercase(checksum, bytes: 32) else {
                throw BuildFailure(
                    phase: "fetch", message: "Cargo.lock has no checksum for \(p.name) \(p.version)", suggestedAction: "regenerate Cargo.lock with a current cargo")
            }
            out.append(p)
        }
        return out
    }

    /// Fetches every package into a local registry at `directory` (created here, world-readable so the
    /// build's uid can read it through its read-only mount).
    func fetch(_ packages: [CargoLock.Package], into directory: String, log: (String) -> Void) async throws -> Summary {
        var summary = Summary()
        var template: String?
        var indexFiles: [String: [String]] = [:]
        let fm = FileManager.default
        try fm.createDirectory(atPath: directory + "/index", withIntermediateDirectories: true, attributes: [.posixPermissions: 0o755])
        for p in packages {
            let checksum = p.checksum!
            summary.crates += 1
            var bytes: [UInt8]?
            var line: String?
            if let cache, !skipCache {
                switch cache.crate(sha256: checksum) {
                case .hit(let cached):
                    if let cachedLine = cache.indexLine(sha256: checksum), Self.indexLine(cachedLine, names: p) {
                        bytes = cached
                        line = cachedLine
                    }
                case .evicted:
                    summary.evicted += 1
                    log("[kiln] the cached \(p.name) \(p.version) did not match its checksum: evicted, fetching it again")
                case .miss:
                    break
                }
            }
            if let bytes {
                summary.hits += 1
                summary.bytesFromCache += Int64(bytes.count)
            } else {
                summary.misses += 1
                do {
                    let dl: String
                    if let template { dl = template } else { dl = try await registry.downloadTemplate() }
                    template = dl
                    let fetchedLine = try await registry.indexLine(name: p.name, version: p.version, checksum: checksum)
                    let fetched = try await registry.download(name: p.name, version: p.version, checksum: checksum, template: dl)
                    guard SHA256.hash(data: fetched).hexString == checksum else {
                        throw BuildFailure(
                            phase: "fetch",
                            message: "\(p.name) \(p.version) from \(registry.indexURL) does not match the checksum Cargo.lock pins (\(checksum.prefix(16))…): refused",
                            retryable: false, suggestedAction: "check Cargo.lock against the registry; the farm operator should check the registry mirror")
                    }
                    summary.bytesFetched += Int64(fetched.count)
                    bytes = fetched
                    line = fetchedLine
                    if let cache { try? cache.store(sha256: checksum, crate: fetched, indexLine: fetchedLine) }
                } catch let failure as SparseRegistry.Failure {
                    throw BuildFailure(
                        phase: "fetch", message: "cannot fetch \(p.name) \(p.version) from \(registry.indexURL): \(failure.description)",
                        retryable: failure.retryable,
                        suggestedAction: failure.retryable
                            ? "retry later; if it persists, the farm operator should check the registry" : "check that Cargo.lock names a published version")
                }
            }
            let file = directory + "/" + p.name + "-" + p.version + ".crate"
            guard fm.createFile(atPath: file, contents: Data(bytes!), attributes: [.posixPermissions: 0o644]) else {
                throw BuildFailure.internalError("fetch", "cannot write \(file)")
            }
            indexFiles[SparseRegistry.indexPath(p.name), default: []].append(line!)
        }
        for (path, lines) in indexFiles {
            let file = directory + "/index/" + path
            try fm.createDirectory(
                atPath: (file as NSString).deletingLastPathComponent, withIntermediateDirectories: true, attributes: [.posixPermissions: 0o755])
            guard fm.createFile(atPath: file, contents: Data((lines.joined(separator: "\n") + "\n").utf8), attributes: [.posixPermissions: 0o644]) else {
                throw BuildFailure.internalError("fetch", "cannot write \(file)")
            }
        }
        if let cache { cache.evictToLimit() }
        return summary
    }

    /// A cached index line must describe exactly this locked package.
    static func indexLine(_ line: String, names p: CargoLock.Package) -> Bool {
        guard let object = try? JSONSerialization.jsonObject(with: Data(line.utf8)) as? [String: Any] else { return false }
        return object["name"] as? String == p.name && object["vers"] as? String == p.version && object["cksum"] as? String == p.checksum
    }
}
