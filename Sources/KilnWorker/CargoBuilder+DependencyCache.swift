import Crypto
import Foundation
import KilnArchive
import KilnAttestation
import KilnCore
import KilnMessages

/// How a Cargo build uses the farm's compiled-dependency cache (#31 item 3, docs/dependency-cache.md).
struct DependencyCachePlan: Sendable {
    var fetch: FetchClient
    /// Signs entries this worker makes (a certified in-memory key passes its certificate).
    var signer: SigningKey
    var certificate: DSSEEnvelope?
    /// Entries are used only when signed by one of these keys, or by a worker key one of them certified.
    var trustedKeys: [PublicKey]
    var workerID: String
    var isolation: String
    /// Root-only scratch (archives in transit) and the job's workspace (unpacking, on its disk limit).
    var scratch: String
    var workspace: String
    /// Largest entry made or taken.
    var maxEntryBytes: Int64 = 2 << 30
    var chunkBytes = 512 << 10
    /// `skip_cache`: neither use nor store.
    var skip = false
}

/// What the build did with the cache, for its log and provenance.
struct DependencyCacheOutcome: Sendable {
    var summary: String
    /// The entry the build's dependencies came from (key, archive digest, who vouched).
    var entry: ResourceDescriptor?
}

extension CargoBuilder {
    static let metadataFile = ".kiln-cargo-metadata.json"

    /// Before the build: the registry crates' compiled units in `out/target`, from a trusted entry of
    /// the farm's cache (a hit) or from a dependency-only step whose result is then stored (a miss).
    /// Never fails the build: whatever goes wrong leaves `out/target` absent and the build compiles
    /// everything itself, as without a cache.
    func prepareDependencies(
        _ context: BuildContext, plan: DependencyCachePlan, environment: [String: String], arguments: [String], rustc: String, cargoVersion: String
    ) async throws -> DependencyCacheOutcome {
        let note: @Sendable (String) -> Void = { context.log(.stderr, "[kiln] " + $0) }
        if plan.skip { return DependencyCacheOutcome(summary: "skipped (skip_cache)") }
        do {
            return try await useOrMakeEntry(context, plan: plan, environment: environment, arguments: arguments, rustc: rustc, cargoVersion: cargoVersion)
        } catch let cancelled as BuildCancelled {
            throw cancelled
        } catch {
            note("compiled dependencies: not used (\(error)); the build compiles them itself")
            try removeTarget(context)
            return DependencyCacheOutcome(summary: "not used: \(error)")
        }
    }

    private func useOrMakeEntry(
        _ context: BuildContext, plan: DependencyCachePlan, environment: [String: String], arguments: [String], rustc: String, cargoVersion: String
    ) async throws -> DependencyCacheOutcome {
        let note: @Sendable (String) -> Void = { context.log(.stderr, "[kiln] " + $0) }
        let lockBytes: [UInt8]
        do { lockBytes = try context.sourceTree.openFile("Cargo.lock", maxBytes: 16 << 20).readAll() } catch {
            throw DependencyCacheError("no readable Cargo.lock at the project's root")
        }
        let lock = CargoLock(text: String(decoding: lockBytes, as: UTF8.self))
        if let foreign = lock.packages.first(where: { $0.source != nil && $0.source != CargoFetcher.cratesIO }) {
            throw DependencyCacheError("\(foreign.name) comes from \(foreign.source ?? ""), not a registry: only registry crates are cached")
        }
        guard lock.packages.contains(where: { $0.source != nil }) else { throw DependencyCacheError("the project has no registry dependencies") }

        // The workspace's shape, from cargo (reads manifests, runs nothing of the project).
        let mounts = Sandbox.Mounts(source: context.sourceRoot, output: context.outputDirectory)
        let cargo = "\(Self.toolchainPath)/bin/cargo"
        let metadataRun = try await context.sandbox.run(
            name: context.jobID + "-metadata",
            command: ["/bin/sh", "-c", "exec \"$0\" metadata --no-deps --format-version 1 --offline > \"$1\"", cargo, Sandbox.outputPath + "/" + Self.metadataFile],
            environment: environment, mounts: withToolchain(mounts), cancel: context.cancel
        ) { _, _ in }
        if metadataRun.process.cancelled { throw BuildCancelled() }
        guard metadataRun.process.succeeded else { throw DependencyCacheError("cargo metadata failed (\(metadataRun.process.description))") }
        let metadata: [UInt8]
        do {
            let out = try ConfinedDirectory(path: context.outputDirectory, readAs: context.sandbox.buildUser)
            metadata = try out.openFile(Self.metadataFile, maxBytes: 16 << 20).readAll()
        } catch { throw DependencyCacheError("cannot read cargo metadata's output: \(error)") }
        let skeleton = try DependencySkeleton.make(metadata: metadata, tree: context.sourceTree)
        if let clash = lock.packages.first(where: { $0.source != nil && skeleton.packages.contains($0.name) }) {
            throw DependencyCacheError("the registry crate \(clash.name) has the name of a workspace package")
        }
        let keyInputs = DependencyCacheKey(
            lock: SHA256.hash(data: lockBytes).hexString,
            manifests: skeleton.files.filter { $0.key.hasSuffix("Cargo.toml") }.mapValues { SHA256.hash(data: $0).hexString },
            rustc: rustc, cargo: cargoVersion,
            rustcDigest: (try? context.digestCache.map { try $0.digest(of: sysroot + "/bin/rustc").0 } ?? FileDigest.of(file: sysroot + "/bin/rustc"))?.sha256
                ?? "unknown",  // unhashable: every such worker shares "unknown", and cargo's fingerprints still check the compiler's version
            arguments: arguments,
            environment: environment.filter {
                ["RUSTFLAGS", "CARGO_PROFILE_RELEASE_CODEGEN_UNITS", "CARGO_INCREMENTAL", "CARGO_TARGET_DIR", "CARGO_HOME"].contains($0.key)
            },
            dependencySource: vendorDirectory == nil ? "none" : (dependencySource ?? "vendored"))
        let key = keyInputs.hex
        let crates = lock.packages.filter { $0.source != nil }.count

        // A hit: a trusted entry for exactly these inputs.
        do {
            if let (statement, trust, archive) = try await fetchEntry(key: key, plan: plan) {
                try install(archive: archive, context: context, plan: plan)
                note(
                    "compiled dependencies: \(statement.crates) crates from the farm's cache (entry sha256:\(statement.archiveSha256.prefix(16))…, \(trust.description))")
                return DependencyCacheOutcome(
                    summary: "hit: \(statement.crates) registry crates, compiled by worker \(statement.workerID) (\(statement.isolation)), \(trust.description)",
                    entry: Self.descriptor(key: key, statement: statement, trust: trust))
            }
        } catch let cancelled as BuildCancelled {
            throw cancelled
        } catch {
            note("compiled dependencies: the farm's entry was refused (\(error)); compiling them here")
            try removeTarget(context)
        }

        // A miss: compile the registry crates alone, keep exactly their units, store them signed.
        note("compiled dependencies: none in the farm's cache; compiling \(crates) registry crates in a dependency-only step (no code of the project runs)")
        let skeletonDirectory = plan.workspace + "/dependency-skeleton"
        Self.removeScratch(skeletonDirectory)  // a fresh directory
        try skeleton.write(to: skeletonDirectory)
        defer { Self.removeScratch(skeletonDirectory) }
        if let user = context.sandbox.buildUser { try ConfinedDirectory(path: skeletonDirectory).changeOwner(to: user) }
        let units = DependencyUnits()
        let step = try await context.sandbox.run(
            name: context.jobID + "-deps", command: [cargo] + arguments, environment: environment,
            mounts: withToolchain(Sandbox.Mounts(source: skeletonDirectory, output: context.outputDirectory)), cancel: context.cancel
        ) { stream, line in
            if stream == .stdout, line.hasPrefix("{") { units.consider(jsonLine: line) } else { context.log(stream, line) }
        }
        if step.process.cancelled { throw BuildCancelled() }
        guard step.process.succeeded else { throw DependencyCacheError("the dependency-only step failed (\(step.process.description))") }
        guard !units.overflowed else { throw DependencyCacheError("cargo reported more than \(units.limit) units") }
        guard units.otherPackages.isEmpty else { throw DependencyCacheError("cargo built packages that are not registry crates") }
        let archive = plan.scratch + "/dependencies-\(key.prefix(16)).tar.gz"
        let digest = try pack(context: context, keep: units.registryUnits, into: archive, maxBytes: plan.maxEntryBytes)
        // The build starts from exactly the archive, as a hit does: nothing else of the step remains.
        try removeTarget(context)
        try install(archive: archive, context: context, plan: plan)
        let statement = DependencyCacheStatement(
            key: key, archiveSha256: digest.sha256, archiveSize: digest.size, workerID: plan.workerID, isolation: plan.isolation, created: Date(),
            crates: crates)
        let seal = try DependencyCacheSeal.seal(statement, key: plan.signer, certificate: plan.certificate)
        let trust: DependencyCacheSeal.Trust = .trustedKey(keyID: plan.signer.publicKey.keyID)
        var stored = "stored in the farm's cache"
        do {
            let sealBytes = Array(try JSONEncoder.sortedKeys.encode(seal))
            if try await plan.fetch.storeDependencyEntry(
                key: key, seal: sealBytes, archive: archive, size: digest.size, sha256: digest.sha256, chunkBytes: plan.chunkBytes) == false
            {
                stored = "the farm's cache had an entry for these inputs already"
            }
        } catch let cancelled as BuildCancelled {
            throw cancelled
        } catch {
            stored = "not stored (\(error))"
        }
        Self.removeScratch(archive)
        note("compiled dependencies: \(crates) registry crates, \(digest.size >> 10) KiB (sha256:\(digest.sha256.prefix(16))…); \(stored)")
        return DependencyCacheOutcome(
            summary: "miss: \(crates) registry crates compiled in a dependency-only step; \(stored)",
            entry: Self.descriptor(key: key, statement: statement, trust: trust))
    }

    func withToolchain(_ mounts: Sandbox.Mounts) -> Sandbox.Mounts {
        var m = mounts
        m.readOnly.append((sysroot, Self.toolchainPath))
        if let vendorDirectory { m.readOnly.append((vendorDirectory, Self.vendorPath)) }
        return m
    }

    static func descriptor(key: String, statement: DependencyCacheStatement, trust: DependencyCacheSeal.Trust) -> ResourceDescriptor {
        ResourceDescriptor(
            uri: "kiln:dependency-cache/\(key)", digest: ["sha256": statement.archiveSha256],
            annotations: ["worker": statement.workerID, "isolation": statement.isolation, "trust": trust.description, "crates": String(statement.crates)])
    }

    /// The entry for `key` if the farm has one whose seal opens with the trusted keys and whose
    /// archive matches it; the archive is left at the returned path (root-only scratch).
    private func fetchEntry(key: String, plan: DependencyCachePlan) async throws -> (DependencyCacheStatement, DependencyCacheSeal.Trust, String)? {
        var sealBytes: [UInt8] = []
        let sealSize = try await plan.fetch.dependencyEntry(key: key, part: .seal, maxBytes: 64 << 10) { sealBytes += $0 }
        guard sealSize >= 0 else { return nil }
        let seal: DependencyCacheSeal
        do { seal = try JSONDecoder().decode(DependencyCacheSeal.self, from: Data(sealBytes)) } catch {
            throw DependencyCacheError("the entry's seal is not JSON")
        }
        let (statement, trust) = try seal.open(trustedKeys: plan.trustedKeys, expectedKey: key)
        guard statement.archiveSize <= plan.maxEntryBytes else { throw DependencyCacheError("the entry is larger than this worker takes") }
        let file = plan.scratch + "/dependencies-\(key.prefix(16)).tar.gz"
        guard FileManager.default.createFile(atPath: file, contents: nil, attributes: [.posixPermissions: 0o600]), let handle = FileHandle(forWritingAtPath: file)
        else { throw DependencyCacheError("cannot write the entry to the worker's scratch") }
        defer { try? handle.close() }  // every chunk went through write(contentsOf:), which throws on failure
        var hasher = SHA256()
        let size = try await plan.fetch.dependencyEntry(key: key, part: .archive, maxBytes: statement.archiveSize) { chunk in
            chunk.withUnsafeBytes { hasher.update(bufferPointer: $0) }
            try handle.write(contentsOf: Data(chunk))
        }
        guard size == statement.archiveSize, hasher.finalize().hexString == statement.archiveSha256 else {
            throw DependencyCacheError("the entry's archive does not match its signed digest")
        }
        return (statement, trust, file)
    }

    /// Packs the kept units of `out/target` (read through the confined view, as the build's user).
    private func pack(context: BuildContext, keep: Set<String>, into file: String, maxBytes: Int64) throws -> FileDigest {
        guard !keep.isEmpty else { throw DependencyCacheError("cargo reported no registry units") }
        let target: ConfinedDirectory
        do { target = try ConfinedDirectory(path: context.outputDirectory, readAs: context.sandbox.buildUser).subdirectory("target") } catch {
            throw DependencyCacheError("the dependency step left no target directory: \(error)")
        }
        let writer = try TarballWriter(path: file, mtime: Int64(Date().timeIntervalSince1970), compressionLevel: 1)
        var total: Int64 = 0
        for (path, kind) in try DependencyUnits.selection(in: target, keep: keep, maxEntries: 200_000) {
            if kind == .directory {
                try writer.addDirectory(path)
                continue
            }
            let handle = try target.openFile(path, maxBytes: maxBytes)
            total += handle.size
            guard total <= maxBytes else { throw DependencyCacheError("the compiled dependencies exceed \(maxBytes >> 20) MiB") }
            try writer.addFile(path, data: try handle.readAll(), executable: handle.isExecutable)
        }
        try writer.finish()
        return try FileDigest.of(file: file)
    }

    /// Unpacks a verified archive into a fresh directory on the job's workspace, hands it to the
    /// build's user and renames it to `out/target` (a rename follows no link the build could have made).
    private func install(archive: String, context: BuildContext, plan: DependencyCachePlan) throws {
        let staging = plan.workspace + "/dependency-units"
        Self.removeScratch(staging)  // a fresh directory
        try FileManager.default.createDirectory(atPath: staging, withIntermediateDirectories: false, attributes: [.posixPermissions: 0o755])
        let extractor = ArchiveExtractor(
            configuration: .init(maxEntries: 200_000, maxTotalBytes: min(plan.maxEntryBytes * 8, context.sandbox.limits.diskBytes), maxCompressionRatio: 100))
        do { _ = try extractor.extract(archivePath: archive, into: staging) } catch {
            Self.removeScratch(staging)  // refused
            throw DependencyCacheError("cannot unpack the entry: \(error)")
        }
        if let user = context.sandbox.buildUser { try ConfinedDirectory(path: staging).changeOwner(to: user) }
        guard rename(staging, context.outputDirectory + "/target") == 0 else {
            let reason = String(cString: strerror(errno))
            Self.removeScratch(staging)  // not installed
            throw DependencyCacheError("cannot put the compiled dependencies in place: \(reason)")
        }
    }

    /// Removes `out/target` (moved aside first: a rename follows no link, and the removal then works
    /// in a directory only the host names). Fails the build when it stays: after a dependency-only step
    /// it holds the project's stub units, which the real build must never see.
    func removeTarget(_ context: BuildContext) throws {
        let aside = (context.outputDirectory as NSString).deletingLastPathComponent + "/target-removed-\(UUID().uuidString)"
        guard rename(context.outputDirectory + "/target", aside) == 0 else {
            if errno == ENOENT { return }
            throw BuildFailure.internalError("build", "cannot clear the dependency step's target directory: \(String(cString: strerror(errno)))")
        }
        Self.removeScratch(aside)  // out of the build's sight already
    }

    /// Removes a file or directory of this step's own on the job's workspace or the root-only scratch
    /// (a skeleton, an archive, a staging or moved-aside directory). Best effort: nothing refers to it
    /// any more, and the workspace and scratch are removed with the job and the worker.
    static func removeScratch(_ path: String) {
        try? FileManager.default.removeItem(atPath: path)  // see above: a leftover is unused and removed with the job
    }
}
