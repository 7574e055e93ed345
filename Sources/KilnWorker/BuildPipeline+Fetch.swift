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
        case nil:
            // With a mirror, cargo generates one offline from it; from a registry Kiln fetches exactly
            // what a lock file pins, and resolving versions against a whole registry is not done here.
            if (try? sourceTree.kind(of: "Cargo.toml")) == .file, try Self.hasRegistryDependencies(sourceTree) {
                throw BuildFailure(
                    phase: "fetch", message: "Cargo.lock is missing: this farm fetches exactly the crates a lock file pins",
                    suggestedAction: "run cargo generate-lockfile (or cargo build) and commit Cargo.lock")
            }
            return nil
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

    /// The fetch phase of a Nix build: a flake's locked inputs into the store (nothing for a plain
    /// default.nix, or a flake without inputs).
    func fetchFlakeInputs(_ flakeTree: ConfinedDirectory?, fetcher: SourceFetcher, scratch: String, batcher: LogBatcher) async throws {
        try await phase(.fetch, batcher)
        guard let flakeTree else { return }
        let note: @Sendable (String) -> Void = { batcher.append("stderr", "[kiln] " + $0) }
        switch try? flakeTree.kind(of: "flake.lock") {
        case nil: return
        case .file?: break
        default: throw BuildFailure(phase: "fetch", message: "flake.lock is not a regular file", suggestedAction: "commit flake.lock as a regular file")
        }
        let bytes: [UInt8]
        do { bytes = try flakeTree.openFile("flake.lock", maxBytes: 1 << 20).readAll() } catch {
            throw BuildFailure(phase: "fetch", message: "cannot read flake.lock: \(error)", suggestedAction: "commit a regular flake.lock of at most 1 MiB")
        }
        let inputs = try NixFlakeInputs.parse(bytes)
        guard !inputs.isEmpty else { return }
        let socket = configuration.toolchains.nixDaemonSocket
        let environment = [
            "PATH": "/usr/bin:/bin", "HOME": scratch, "NIX_REMOTE": NixDaemon.remote(socket: socket),
        ]
        note("providing \(inputs.count) flake inputs")
        let summary = try await NixFlakeInputs(nixEnvironment: environment, fetcher: fetcher, cancel: cancel).provide(inputs, scratch: scratch, log: note)
        note("flake inputs: \(summary.crates), \(summary.hits) already in the store, \(summary.misses) fetched (\(summary.bytesFetched) bytes)")
        fetchSummary.withLock { $0 = summary }
    }

    /// Whether the manifest names any dependency at all (a crate without dependencies needs no lock
    /// file from the user: cargo writes one offline). A line scan of a manifest of at most 1 MiB.
    static func hasRegistryDependencies(_ tree: ConfinedDirectory) throws -> Bool {
        guard let bytes = try? tree.openFile("Cargo.toml", maxBytes: 1 << 20).readAll() else { return false }
        var inDependencies = false
        for raw in String(decoding: bytes, as: UTF8.self).split(separator: "\n") {
            let line = raw.trimmingCharacters(in: .whitespaces)
            if line.hasPrefix("[") {
                inDependencies = line.contains("dependencies")
                if inDependencies && line.hasSuffix("]") && line.split(separator: ".").count > 1 && !line.hasPrefix("[target.") { return true }  // [dependencies.foo]
                continue
            }
            if inDependencies && !line.isEmpty && !line.hasPrefix("#") && !line.contains("path") { return true }
        }
        return false
    }
}
