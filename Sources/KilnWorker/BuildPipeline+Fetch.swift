import AsyncHTTPClient
import Foundation
import KilnArchive

extension BuildPipeline {
    /// The fetch phase of a Cargo build: the registry crates `Cargo.lock` pins, verified, as a local
    /// registry under `directory`. Nil when there is nothing to fetch (no lock file, no registry
    /// dependencies) or the operator vendors dependencies (`--cargo-vendor`).
    func fetchCargoDependencies(_ sourceTree: ConfinedDirectory, into directory: String, batcher: LogBatcher) async throws -> String? {
        try await phase(.fetch, batcher)
        let note: @Sendable (String) -> Void = { batcher.append("stderr", "[kiln] " + $0) }
        if configuration.toolchains.cargoVendorDirectory != nil {
            note("dependencies come from the farm's vendored registry; nothing to fetch")
            return nil
        }
        // Read through the confined view: a link or FIFO named Cargo.lock is refused, not followed.
        switch try? sourceTree.kind(of: "Cargo.lock") {
        case nil: return nil  // cargo generates one (offline, from the farm's vendored sources) or says what is missing
        case .file?: break
        default: throw BuildFailure(phase: "fetch", message: "Cargo.lock is not a regular file", suggestedAction: "commit Cargo.lock as a regular file")
        }
        let text: String
        do {
            text = String(decoding: try sourceTree.openFile("Cargo.lock", maxBytes: 16 << 20).readAll(), as: UTF8.self)
        } catch {
            throw BuildFailure(phase: "fetch", message: "cannot read Cargo.lock: \(error)", suggestedAction: "commit a regular Cargo.lock file of at most 16 MiB")
        }
        let packages = try CargoFetcher.registryPackages(CargoLock(text: text))
        guard !packages.isEmpty else { return nil }
        let http = HTTPClient(eventLoopGroupProvider: .singleton, configuration: .init(redirectConfiguration: .disallow))
        do {
            let registry: SparseRegistry
            do { registry = try SparseRegistry(url: configuration.toolchains.cargoRegistry, http: http) } catch {
                throw BuildFailure.farm("fetch", error.description, operatorAction: "set --cargo-registry to a sparse index URL", retryable: false)
            }
            let cache = try configuration.toolchains.crateCache.map { try CrateCache(configuration: $0) }
            note("fetching \(packages.count) crates from \(registry.indexURL)\(cache == nil ? "" : " (through the crate cache)")")
            let summary = try await CargoFetcher(registry: registry, cache: cache, skipCache: request.skipCache ?? false)
                .fetch(packages, into: directory, log: note)
            note(
                "fetched: \(summary.crates) crates, \(summary.hits) from the cache (\(summary.bytesFromCache) bytes), \(summary.misses) downloaded (\(summary.bytesFetched) bytes)"
                    + (summary.evicted > 0 ? ", \(summary.evicted) corrupt cache entries evicted" : ""))
            fetchSummary.withLock { $0 = summary }
            try await http.shutdown()
            return directory
        } catch {
            try? await http.shutdown()
            throw error
        }
    }
}
