import Foundation
import KilnArchive
import KilnAttestation
import KilnBusClient
import KilnCore
import KilnMessages
import KilnProcess
import Logging
import Synchronization

/// The stages of one build: source → detect → fetch → build → package → attest → upload, each announced by a
/// `phase` event, ending in exactly one terminal event: `done`, `failed` or `cancelled`.
final class BuildPipeline: Sendable {
    let configuration: WorkerConfiguration
    let request: BuildRequest
    let key: SigningKey
    /// The pool's certificate over `key`, for a worker whose key was made in memory.
    let certificate: CertifiedKey?
    let evidenceProvider: any EvidenceProvider
    let sysroot: String?
    let client: BusClient
    let events: EventLog
    let cancel: CancelSwitch
    let logger: Logger
    /// Set when SIGTERM (not a user's cancel) stopped the build.
    let shutdownRequested = Flag()
    /// The commit and tree a repository build checked out (for the job's record).
    let checkedOut = Mutex<(commit: String, tree: String)?>(nil)
    /// What the fetch phase did (nil when it fetched nothing).
    let fetchSummary = Mutex<CargoFetcher.Summary?>(nil)
    /// A rebuild's comparison with the original (nil for other builds).
    let comparison = Mutex<RebuildComparison?>(nil)

    init(
        configuration: WorkerConfiguration, request: BuildRequest, key: SigningKey, certificate: CertifiedKey? = nil,
        evidenceProvider: any EvidenceProvider, sysroot: String?, client: BusClient, events: EventLog, cancel: CancelSwitch, logger: Logger
    ) {
        self.configuration = configuration
        self.request = request
        self.key = key
        self.certificate = certificate
        self.evidenceProvider = evidenceProvider
        self.sysroot = sysroot
        self.client = client
        self.events = events
        self.cancel = cancel
        self.logger = logger
    }

    var scratch: String { configuration.scratchDirectory }

    func run() async {
        let started = Date()
        let batcher = LogBatcher(path: scratch + "/build.log", maxShippedBytes: configuration.limits.maxLogBytes)
        // Heartbeats and the log pump are child tasks of the build: they end with it, before the
        // last log lines and the terminal event go out.
        let outcome = await withTaskGroup(of: Void.self, returning: Result<(FileDigest, [String: FileDigest]), any Error>.self) { group in
            group.addTask {
                while (try? await Task.sleep(for: self.configuration.limits.heartbeatInterval)) != nil {
                    await self.events.emit(.heartbeat)
                }
            }
            group.addTask {
                while (try? await Task.sleep(for: .milliseconds(100))) != nil {
                    await self.ship(batcher)
                }
            }
            defer { group.cancelAll() }
            do {
                return .success(try await stages(started: started, batcher: batcher))
            } catch {
                return .failure(error)
            }
        }
        await ship(batcher)

        switch outcome {
        case .success(let (tarball, _)):
            let cacheSummary = fetchSummary.withLock { $0 }
            let source = checkedOut.withLock { $0 }
            let comparison = comparison.withLock { $0 }
            await events.emit(.done) {
                $0.reproducible = comparison?.reproducible
                $0.differingArtifacts = comparison?.differingArtifacts
                $0.sourceCommit = source?.commit
                $0.sourceTree = source?.tree
                $0.sha256 = tarball.sha256
                $0.size = tarball.size
                $0.cacheSummary = cacheSummary
            }
        case .failure(let error):
            if shutdownRequested.isSet {
                await events.emit(.failed) {
                    $0.failurePhase = "worker"
                    $0.message = "the worker was shut down during the build"
                    $0.retryable = true
                    $0.suggestedAction = "submit the build again"
                }
            } else if error is BuildCancelled || cancel.isFired {
                await events.emit(.cancelled)
            } else {
                let failure = (error as? BuildFailure) ?? .internalError(currentPhase.value, "\(error)")
                logger.info("build failed: \(failure)")
                let cacheSummary = fetchSummary.withLock { $0 }
                let source = checkedOut.withLock { $0 }
                await events.emit(.failed) {
                    $0.sourceCommit = source?.commit
                    $0.sourceTree = source?.tree
                    $0.cacheSummary = cacheSummary
                    $0.requires = failure.requires
                    $0.failurePhase = failure.phase
                    $0.message = failure.message
                    $0.retryable = failure.retryable
                    $0.suggestedAction = failure.suggestedAction
                }
            }
        }
    }

    private let currentPhase = PhaseBox()

    /// Starts a phase: the previous phase's log lines go out first, in the same step (#18).
    func phase(_ p: BuildPhase, _ batcher: LogBatcher) async throws {
        if cancel.isFired { throw BuildCancelled() }
        currentPhase.value = p.rawValue
        await events.flushLogs(batcher, then: .phase) { $0.name = p.rawValue }
    }

    private func ship(_ batcher: LogBatcher) async {
        await events.flushLogs(batcher)
    }

    private func stages(started: Date, batcher: LogBatcher) async throws -> (FileDigest, [String: FileDigest]) {
        let fm = FileManager.default
        let note: @Sendable (String) -> Void = { batcher.append("stderr", "[kiln] " + $0) }
        let limits = try configuration.limits(for: request.buildConfig)
        if limits.network { note("this build has network access (build_config.internet_access): it is not hermetic") }

        // Source.
        try await phase(.source, batcher)
        let fetcher = SourceFetcher(
            git: configuration.toolchains.git, fetchTimeout: configuration.limits.fetchTimeout,
            archiveLimits: configuration.limits.archive, fetch: fetchClient)
        // The build's workspace: a size-limited file system (the disk limit) holding src/ and out/.
        // Everything else in the scratch directory stays root-only and outside the sandbox.
        let workspace = try Workspace.create(at: scratch + "/job", diskLimitBytes: limits.diskBytes, note: note)
        defer { workspace.remove() }
        let sourceDir = workspace.path + "/src"
        let fetched: SourceFetcher.Fetched
        if let url = request.repoURL {
            fetched = try await fetcher.fetchGit(url: url, ref: request.repoRef ?? "HEAD", into: sourceDir, cancel: cancel, log: note)
            if let commit = fetched.gitCommit, let tree = fetched.gitTree { checkedOut.withLock { $0 = (commit, tree) } }
        } else if let data = request.sourceData {
            guard let bytes = Base64.decode(data) else {
                throw BuildFailure.source("source_data is not valid base64", fix: "base64-encode the ZIP or tar.gz")
            }
            fetched = try fetcher.extractArchive(bytes, name: request.sourceName, scratch: scratch, unpackInto: workspace.path + "/unpacked", into: sourceDir)
        } else if let ref = request.source {
            let bytes = try await fetchSourceChunks(ref)
            fetched = try fetcher.extractArchive(bytes, name: ref.name ?? request.sourceName, scratch: scratch, unpackInto: workspace.path + "/unpacked", into: sourceDir)
        } else {
            throw BuildFailure.source("the request has neither repo_url nor source_data", fix: "send repo_url + repo_ref, or source_data")
        }

        // From here on the source tree belongs to the build's uid, and the host reads it only through
        // the confined view (no link is followed, reads act as the build's uid).
        let buildUser = configuration.buildUser
        let sourceTree: ConfinedDirectory
        do {
            let tree = try ConfinedDirectory(path: fetched.root)
            if let buildUser { try tree.changeOwner(to: buildUser) }
            sourceTree = try ConfinedDirectory(path: fetched.root, readAs: buildUser)
        } catch {
            throw BuildFailure.internalError("source", "cannot prepare the source tree: \(error)")
        }

        // Where the build runs (the fetch phase's lock generation runs there too).
        let out = workspace.path + "/out"
        let artifacts = scratch + "/artifacts"
        let configCopies = scratch + "/config"
        try fm.createDirectory(atPath: out, withIntermediateDirectories: true)
        if let buildUser { chown(out, buildUser.uid, buildUser.gid) }
        for dir in [artifacts, configCopies] { try fm.createDirectory(atPath: dir, withIntermediateDirectories: true, attributes: [.posixPermissions: 0o700]) }
        let context = BuildContext(
            sourceRoot: fetched.root, sourceTree: sourceTree, outputDirectory: out, artifactsDirectory: artifacts,
            sourceDateEpoch: fetched.sourceDateEpoch, jobID: request.jobID,
            sandbox: Sandbox(
                bwrap: configuration.toolchains.bwrap, limits: limits,
                buildUser: buildUser, stageDirectory: configuration.sandboxStageDirectory,
                privateDirectory: scratch),
            cancel: cancel, log: { batcher.append($0.rawValue, $1) }, digestCache: configuration.digestCache)

        // Detect.
        try await phase(.detect, batcher)
        let kind = try ProjectKind.detect(sourceTree)
        note("detected a \(kind.rawValue) project")
        let builder: any ProjectBuilder
        switch kind {
        case .cargo:
            guard let sysroot else {
                var failure = BuildFailure.farm(
                    "detect", "this is a Cargo project and this worker has no Rust toolchain",
                    operatorAction: "install Rust on the workers (rustup, or Debian's cargo and rustc) or pass --rust-sysroot")
                failure.requires = "cargo"
                throw failure
            }
            let fetchedCrates = try await fetchCargoDependencies(context, sysroot: sysroot, into: scratch + "/registry", batcher: batcher)
            let registry = fetchedCrates.registry
            var cargo = CargoBuilder(
                sysroot: sysroot, vendorDirectory: registry ?? configuration.toolchains.cargoVendorDirectory, limits: limits, options: request.buildOptions)
            cargo.lockOrigin = fetchedCrates.lockOrigin
            if configuration.dependencyCache.enabled {
                cargo.dependencyCache = dependencyCachePlan(workspace: workspace.path)
            }
            if registry != nil {
                cargo.dependencySource =
                    "fetched through the farm's fetch service (kiln-fetch), each crate checked against Cargo.lock's SHA-256 (read-only local registry)"
            } else if let mirror = configuration.toolchains.cargoVendorDirectory {
                cargo.dependencySource = "the farm's mirror \(mirror) (source replacement, read-only)"
            }
            builder = cargo
        case .nix, .nixFlake:
            guard configuration.toolchains.nixEnabled else {
                // Retryable: another worker of the farm may build Nix projects (the gateway sends the
                // next attempt only to one that announced it can).
                var failure = BuildFailure.farm(
                    "detect", "this is a Nix project and this worker does not build Nix projects (--no-nix)",
                    operatorAction: "run workers without --no-nix to build Nix projects")
                failure.requires = "nix"
                throw failure
            }
            if let (problem, action) = NixDaemon.unavailability(socket: configuration.toolchains.nixDaemonSocket) {
                var failure = BuildFailure.farm("detect", "this is a Nix project and \(problem)", operatorAction: action)
                failure.requires = "nix"
                throw failure
            }
            var jobDaemon: JobNixDaemon?
            if configuration.toolchains.nixDaemonPerJob {
                if geteuid() == 0 {
                    // Its builds' directories on the workspace (the disk limit); its socket in the
                    // root-only scratch, reachable only through the sandbox's bind.
                    jobDaemon = JobNixDaemon(
                        socketDirectory: scratch + "/nix-daemon", buildDirectory: workspace.path + "/nix-build",
                        configurationDirectory: ProcessInfo.processInfo.environment["NIX_CONF_DIR"],
                        timeoutSeconds: Int(limits.buildTimeout.components.seconds))
                } else {
                    note("the shared nix-daemon builds this job's derivations, outside its limits: a worker that is not root cannot start one of the job's own")
                }
            }
            builder = NixBuilder(
                flake: kind == .nixFlake, daemonSocket: configuration.toolchains.nixDaemonSocket, jobDaemon: jobDaemon, limits: limits,
                attribute: request.buildOptions?.attribute)
            try await fetchFlakeInputs(kind == .nixFlake ? sourceTree : nil, fetcher: fetcher, scratch: scratch, batcher: batcher)
        }

        // Build.
        try await phase(.build, batcher)
        var built: BuiltProject
        do { built = try await builder.build(context) } catch let failure as BuildFailure where failure.phase == "build" {
            if workspace.isFull {
                throw BuildFailure.build(
                    "the build hit its disk limit of \(limits.diskBytes >> 20) MiB (\(failure.message))",
                    fix: "write less into /build, or ask the operator for a larger --disk-mb")
            }
            throw failure
        }

        // Package: copy what the build reported out of its tree (through the confined view only),
        // then the artifacts are settled; their digests are taken while the tarball is written.
        try await phase(.package, batcher)
        let collector: OutputCollector
        do {
            collector = OutputCollector(
                roots: .init(
                    output: try ConfinedDirectory(path: out, readAs: buildUser), source: sourceTree,
                    nixStore: kind == .cargo ? nil : try ConfinedDirectory(path: "/nix/store", readAs: buildUser)),
                maxFileBytes: limits.maxArtifactBytes, maxFiles: limits.maxArtifacts, maxTotalBytes: limits.diskBytes)
        } catch {
            throw BuildFailure.internalError("package", "cannot open the build's output: \(error)")
        }
        _ = try collector.collectArtifacts(built.artifacts, into: artifacts, log: note)
        let buildConfig = try collector.collectBuildConfig(built.buildConfig, into: configCopies)
        if kind == .cargo, let lock = buildConfig["Cargo.lock"], let text = try? String(contentsOfFile: lock, encoding: .utf8) {
            built.resolvedDependencies += CargoBuilder.lockDependencies(text)
        }
        _ = try batcher.finish()

        // Attest (signing, evidence) and write the deterministic tarball.
        try await phase(.attest, batcher)
        let nonce = try Nonce.validate(request.nonce).get()
        var external = SLSAProvenance.ExternalParameters(nonce: nonce, buildConfig: request.buildConfig, buildOptions: request.buildOptions)
        var resolved = built.resolvedDependencies
        let manifestInputs: Manifest.Inputs
        if let url = request.repoURL {
            external.repository = url
            external.ref = request.repoRef
            resolved.insert(
                ResourceDescriptor(
                    uri: "git+\(url)@\(request.repoRef ?? "HEAD")",
                    digest: ["gitCommit": fetched.gitCommit ?? "", "gitTree": fetched.gitTree ?? ""],
                    // Whose word it is that the ref named this commit: the fetch service's, unless the
                    // request pinned the commit itself (the worker checked the pack holds it either way).
                    annotations: ["refResolvedBy": fetched.refResolvedByFetchService ? "kiln-fetch" : "request (pinned commit)"]), at: 0)
            manifestInputs = .init(source: "git+\(url)@\(request.repoRef ?? "HEAD")", gitCommit: fetched.gitCommit, gitTree: fetched.gitTree, nonce: nonce)
        } else {
            let name = fetched.archiveName ?? "source"
            external.source = ResourceDescriptor(name: name, digest: ["sha256": fetched.archiveSha256 ?? ""])
            resolved.insert(ResourceDescriptor(name: name, digest: ["sha256": fetched.archiveSha256 ?? ""]), at: 0)
            manifestInputs = .init(source: name, archiveSha256: fetched.archiveSha256, nonce: nonce)
        }
        var inputs = ResultBuilder.Inputs(
            jobID: request.jobID, nonce: nonce, buildType: built.buildType, externalParameters: external,
            internalParameters: built.internalParameters.merging(["worker_id": configuration.workerID, "sandbox": "bubblewrap", "isolation": configuration.isolation]) {
                a, _ in a
            },
            resolvedDependencies: resolved, builderID: configuration.builderID,
            builderVersion: BuilderIdentity(executable: "/proc/self/exe", digestCache: configuration.digestCache).version,
            startedOn: started, finishedOn: Date(), manifestInputs: manifestInputs, sourceDateEpoch: fetched.sourceDateEpoch)
        inputs.builderDependencies = certificate?.certificate.image ?? []
        var attachments: [String: [UInt8]] = [:]
        if let original = request.compareWith {
            attachments[RebuildComparison.resultPath] = try await compare(artifacts: artifacts, with: original, note: note)
        }
        let resultPath = scratch + "/result.tar.gz"
        let output: ResultBuilder.Output
        do {
            output = try ResultBuilder(key: key, evidenceProvider: evidenceProvider, certificate: certificate?.envelope)
                .build(
                    artifactsDirectory: artifacts, buildConfig: buildConfig, buildLog: batcher.path, attachments: attachments,
                    inputs: inputs, output: resultPath)
        } catch {
            throw BuildFailure.internalError("attest", "cannot produce the attested result: \(error)")
        }
        for path in output.artifacts.keys.sorted() {
            let d = output.artifacts[path]!
            await events.emit(.artifact) {
                $0.path = path
                $0.sha256 = d.sha256
                $0.size = d.size
            }
        }

        // Upload.
        try await phase(.upload, batcher)
        let uploader = ResultUploader(
            client: client, jobID: request.jobID, workerID: configuration.workerID,
            // A chunk and its headers fit the broker's largest frame (a nats-server's is 1 MiB by default).
            chunkSize: min(configuration.limits.chunkSize, max(client.maxFrame - 16 * 1024, 4096)), window: configuration.limits.chunkWindow,
            deliveryTimeout: configuration.limits.deliveryTimeout, logger: logger)
        try await uploader.upload(path: resultPath, digest: output.tarball)
        return (output.tarball, output.artifacts)
    }

    /// How this build uses the farm's compiled-dependency cache: entries signed by the farm key (the
    /// `--key` file of a process worker, or the key that certified a VM worker's in-memory key) or
    /// by a key the operator added; its own entries signed with the key that signs its results.
    func dependencyCachePlan(workspace: String) -> DependencyCachePlan {
        var trusted = configuration.dependencyCache.trustedKeys
        if let certificate {
            // The pool's certificate names its issuer; the worker checked it certifies this key.
            if let issuer = try? PublicKey(text: certificate.certificate.issuer) { trusted.append(issuer) }  // malformed: the farm key is not added
        } else if let farmKey = try? PublicKey(contentsOf: configuration.keyFile) {  // no key file (a TEE's in-memory key only): none added
            trusted.append(farmKey)
        }
        var plan = DependencyCachePlan(
            fetch: fetchClient, signer: key, certificate: certificate?.envelope, trustedKeys: trusted, workerID: configuration.workerID,
            isolation: configuration.isolation, scratch: scratch, workspace: workspace)
        plan.maxEntryBytes = configuration.dependencyCache.maxEntryBytes
        plan.chunkBytes = min(512 << 10, max(client.maxFrame - 16 * 1024, 4096))
        plan.skip = request.skipCache ?? false
        return plan
    }

    /// Fetches an upload too large to travel inline, chunk by chunk, and checks its digest.
    private func fetchSourceChunks(_ ref: BuildRequest.SourceReference) async throws -> [UInt8] {
        guard ref.size >= 0, ref.size <= configuration.limits.archive.maxBytes, ref.chunkSize > 0 else {
            throw BuildFailure.source("the uploaded source is larger than this worker accepts", fix: "send a smaller archive")
        }
        return try await fetchChunks(size: ref.size, chunkSize: ref.chunkSize, sha256: ref.sha256, blob: nil) {
            BuildFailure.source("cannot fetch the uploaded source: \($0)", retryable: true, fix: "submit again")
        }
    }

    /// Fetches a blob the gateway keeps for this job (`blob`: nil for the uploaded source, `original`
    /// for a rebuild's original result) chunk by chunk from `Subjects.source(job)`, and checks its
    /// digest. `size` and `chunkSize` are range-checked by the caller.
    func fetchChunks(
        size: Int64, chunkSize: Int, sha256: String, blob: String?, failure: @escaping @Sendable (String) -> BuildFailure
    ) async throws -> [UInt8] {
        var bytes: [UInt8] = []
        bytes.reserveCapacity(Int(size))
        let count = Int((size + Int64(chunkSize) - 1) / Int64(chunkSize))
        var headers: [String: String] = [:]
        if let blob { headers["blob"] = blob }
        for index in 0..<count {
            if cancel.isFired { throw BuildCancelled() }
            headers["index"] = String(index)
            let chunkHeaders = headers
            // A lost reply or a restarting gateway is retried; an answer that there is no such blob is final.
            bytes += try await Backoff(initial: .milliseconds(200), maximum: .seconds(2), maxAttempts: 10).retrying(
                shouldRetry: { !($0 is BuildFailure || $0 is CancellationError) },
                giveUp: { error, _ in failure("\(error)") }
            ) {
                let reply = try await client.request(
                    Subjects.source(request.jobID, worker: configuration.workerID), payload: [UInt8](), headers: chunkHeaders, timeout: .seconds(10))
                if let status = reply.status, status != "200" { throw failure("the gateway answered \(status)") }
                return reply.payloadBytes
            }
        }
        guard bytes.count == size, FileDigest.of(bytes: bytes).sha256 == sha256 else { throw failure("it did not arrive intact (sha256 mismatch)") }
        return bytes
    }
}

/// The phase the build is in, read when an unexpected error has to be attributed to one.
final class PhaseBox: Sendable {
    private let phase = Mutex("source")
    var value: String {
        get { phase.withLock { $0 } }
        set { phase.withLock { $0 = newValue } }
    }
}
