import ArgumentParser
import Foundation
import KilnAttestation
import KilnBusClient
import KilnCore
import KilnWorker
import Logging
import ServiceLifecycle

@main
struct KilnWorkerCommand: AsyncParsableCommand {
    static let configuration = CommandConfiguration(
        commandName: "kiln-worker",
        abstract: "Takes exactly one build from the bus, builds it in a sandbox, publishes the attested result, exits.",
        discussion: """
            Exit status: 0 when the gateway acknowledged the terminal event; 3 when it never did; 4 when no build \
            arrived before --idle-timeout (or on SIGTERM while idle).
            """,
        version: KilnVersion.current.description)

    @Option(help: "Broker URL, kiln://[user:password@]host:port (env KILN_BROKER_URL).") var broker: String?
    @Option(help: "Broker token (env KILN_BROKER_TOKEN).") var token: String?
    @Option(help: "Worker id, a subject token (default: random).") var workerID: String?
    @Option(help: "The gateway's name on a bus that names senders: build requests and control messages from anyone else are ignored.")
    var gatewayIdentity: String = "gateway"
    @Option(help: "Scratch directory, deleted on exit (default: a fresh one under $TMPDIR).") var scratch: String?
    @Option(help: "Signing key file (PEM); created if missing.") var key: String = "kiln-worker-key.pem"
    @Option(help: "Build wall-clock limit in seconds.") var buildTimeout: Int = 1800
    @Option(help: "Seconds to get a repository from the farm's fetch service (kiln-fetch) and check it out.") var fetchTimeout: Int = 600
    @Option(help: "Sandbox memory limit in MiB.") var memoryMb: Int = 8192
    @Option(help: "Sandbox process limit.") var maxProcesses: Int = 1024
    @Option(help: "Disk limit in MiB: the build's workspace and its /tmp are size-limited file systems of this size.") var diskMb: Int = 10240
    @Option(help: "CPUs the sandbox may use (cgroup v2 cpu.max; 0 = no limit).") var cpus: Double = 0
    @Option(help: "Unprivileged host uid (and gid) the build runs as when the worker is root (default: 200000 + pid mod 100000). Never 0.") var buildUid: Int?
    @Option(help: "Largest single artifact in MiB.") var maxArtifactMb: Int = 2048
    @Option(help: "Log bytes shipped as events.") var maxLogBytes: Int = 1 << 20
    @Option(help: "Result chunk size in bytes.") var chunkSize: Int = 1 << 20
    @Option(help: "Seconds to keep trying to deliver the result and terminal event to the gateway.") var deliveryTimeout: Int = 600
    @Option(help: "Largest uploaded archive, unpacked, in MiB.") var maxSourceMb: Int = 2048
    @Option(help: "Most entries in an uploaded archive.") var maxSourceEntries: Int = 50_000
    @Option(help: "Cargo registry mirror: a `cargo vendor` directory or a local registry, mounted read-only (nothing is fetched).")
    var cargoVendor: String?
    @Option(help: "Rust toolchain sysroot (default: `rustc --print sysroot`).") var rustSysroot: String?
    @Flag(help: "Give network to builds whose build_config asks for internet_access (they are then not hermetic; the gateway must allow it too).")
    var allowInternetBuilds = false
    @Flag(help: "Disable Nix builds.") var noNix = false
    @Option(help: "The nix-daemon's socket.") var nixDaemonSocket = NixDaemon.defaultSocket
    @Option(
        help:
            "Who builds a Nix job's derivations: 'job' (a nix-daemon of the job's own, in its cgroup and on its workspace; needs root) or 'shared' (the daemon at --nix-daemon-socket, outside the job's limits)."
    ) var nixDaemon: String = "job"
    @Option(help: "configfs-tsm report directory.") var tsmRoot: String = "/sys/kernel/config/tsm/report"
    @Flag(help: "Make the signing key in memory and have the pool that launched this worker certify it with the farm key (a VM worker); --key is not used.")
    var certifiedKey = false
    @Option(help: "What isolates this worker from the host, said in its announcement and provenance: process, vm-kvm or vm-tcg.")
    var isolation = "process"
    @Flag(help: "In a TEE, sign with the --key file instead of a per-build key made in memory and bound into the report.") var farmKeyInTee = false
    @Option(help: "Builder identity recorded in provenance (the worker image).") var builderID: String = "https://kiln.build/worker/local@v1"
    @Option(help: "Give up waiting for a build after this many seconds (default: wait forever).") var idleTimeout: Int?
    @Flag(help: "Keep the scratch directory (debugging).") var keepScratch = false
    @Option(
        help: ArgumentHelp(
            "Directory remembering the digests of this executable and the toolchain's binaries across one-shot workers, keyed by each file's identity; it must be this user's and closed to others, or it is not used. Default: /var/cache/kiln/worker-digests as root, else ~/.cache/kiln/worker-digests; 'none': hash them for every build.",
            valueName: "dir"))
    var digestCache: String?
    @Option(help: "Most entries the digest cache keeps (one per distinct file identity hashed); past it the oldest half is deleted.")
    var digestCacheEntries = 1024
    @Option(
        help: ArgumentHelp(
            "A manifest of digests taken as given for the files it names ('<sha256> <size> <absolute path>' per line; this user's, closed to others): a VM image's list for its own kiln-worker and dm-verity toolchain. Repeatable.",
            valueName: "file"))
    var knownDigests: [String] = []
    @Option(
        help:
            "The farm's compiled-dependency cache (through kiln-fetch): 'on' uses entries signed by a trusted key and stores what this worker compiles; 'off' compiles every dependency in each build."
    ) var dependencyCache = "on"
    @Option(
        help: ArgumentHelp(
            "A public key (PEM, hex or base64 file) whose compiled-dependency entries this worker uses, besides the farm key (--key, or the key that certified this worker). Repeatable.",
            valueName: "file"))
    var dependencyCacheTrust: [String] = []
    @Option(help: "Largest compiled-dependency entry made or used, in MiB.") var maxDependencyEntryMb: Int64 = 2048
    @Option(help: "Log level.") var logLevel: String = "info"

    func run() async throws {
        KilnLogging.bootstrap(level: logLevel)
        let id = workerID ?? "w-" + UUID().uuidString.prefix(13).lowercased().replacingOccurrences(of: "-", with: "")
        var bus = try BusClient.Configuration.fromCommandLine(url: broker, token: token, name: "kiln-worker \(id)")
        // A worker credential permits this worker's own inbox subjects only.
        bus.inboxNamespace = id
        var limits = WorkerConfiguration.Limits()
        limits.buildTimeout = .seconds(buildTimeout)
        limits.fetchTimeout = .seconds(fetchTimeout)
        limits.memoryBytes = Int64(memoryMb) << 20
        limits.maxProcesses = maxProcesses
        limits.maxLogBytes = maxLogBytes
        guard diskMb > 0, diskMb <= 1 << 24, cpus >= 0, cpus <= 4096, maxArtifactMb > 0 else {
            throw ValidationError("--disk-mb, --cpus and --max-artifact-mb must be positive (and sane)")
        }
        limits.diskBytes = Int64(diskMb) << 20
        limits.cpuQuota = cpus
        limits.maxArtifactBytes = Int64(maxArtifactMb) << 20
        limits.chunkSize = chunkSize
        limits.deliveryTimeout = .seconds(deliveryTimeout)
        limits.archive.maxBytes = Int64(maxSourceMb) << 20
        limits.archive.maxEntries = maxSourceEntries
        var toolchains = WorkerConfiguration.Toolchains()
        toolchains.cargoVendorDirectory = cargoVendor
        toolchains.rustSysroot = rustSysroot
        toolchains.nixEnabled = !noNix
        toolchains.nixDaemonSocket = nixDaemonSocket
        guard ["job", "shared"].contains(nixDaemon) else { throw ValidationError("--nix-daemon must be 'job' or 'shared'") }
        toolchains.nixDaemonPerJob = nixDaemon == "job"
        let scratchDir = scratch ?? (FileManager.default.temporaryDirectory.path + "/kiln-worker-" + id)
        let configuration = WorkerConfiguration(
            bus: bus, workerID: id, scratchDirectory: scratchDir, keyFile: key, limits: limits,
            toolchains: toolchains, tsmRoot: tsmRoot, builderID: builderID, keepScratch: keepScratch,
            idleTimeout: idleTimeout.map { .seconds($0) })
        var configuration2 = configuration
        configuration2.ephemeralKeyInTEE = !farmKeyInTee
        configuration2.certifiedKey = certifiedKey
        guard ["process", "vm-kvm", "vm-tcg"].contains(isolation) else { throw ValidationError("--isolation must be process, vm-kvm or vm-tcg") }
        configuration2.isolation = isolation
        configuration2.allowInternetBuilds = allowInternetBuilds
        let digestDirectory =
            digestCache
            ?? (geteuid() == 0 ? "/var/cache/kiln/worker-digests" : FileManager.default.homeDirectoryForCurrentUser.path + "/.cache/kiln/worker-digests")
        guard digestCacheEntries >= 2, digestCacheEntries <= 1_000_000 else { throw ValidationError("--digest-cache-entries must be 2 to 1000000") }
        if digestDirectory != "none", !configuration2.useDigestCache(at: digestDirectory, maxEntries: digestCacheEntries) {
            FileHandle.standardError.write(Data("kiln-worker: not using --digest-cache \(digestDirectory): not a directory of this user's closed to others\n".utf8))
        }
        for manifest in knownDigests {
            do { try configuration2.addKnownDigests(fromFile: manifest) } catch { throw ValidationError("--known-digests: \(error)") }
        }
        guard ["on", "off"].contains(dependencyCache) else { throw ValidationError("--dependency-cache must be 'on' or 'off'") }
        guard maxDependencyEntryMb > 0, maxDependencyEntryMb <= 1 << 20 else { throw ValidationError("--max-dependency-entry-mb must be 1 to 1048576") }
        configuration2.dependencyCache.enabled = dependencyCache == "on"
        configuration2.dependencyCache.maxEntryBytes = maxDependencyEntryMb << 20
        for file in dependencyCacheTrust {
            do { configuration2.dependencyCache.trustedKeys.append(try PublicKey(contentsOf: file)) } catch {
                throw ValidationError("--dependency-cache-trust \(file): \(error)")
            }
        }
        guard !gatewayIdentity.isEmpty, gatewayIdentity.utf8.count <= 256 else { throw ValidationError("--gateway-identity must be a name of 1 to 256 bytes") }
        configuration2.gateway = GatewayIdentity(name: gatewayIdentity)
        if let buildUid {
            guard buildUid > 0, buildUid < Int(Int32.max) else { throw ValidationError("--build-uid must be a positive uid (builds never run as root)") }
            configuration2.buildUser = .init(uid: uid_t(buildUid), gid: gid_t(buildUid))
        } else {
            configuration2.buildUser = WorkerConfiguration.defaultBuildUser()
        }
        var logger = Logger(label: "kiln.worker")
        logger[metadataKey: "worker_id"] = "\(id)"
        let worker = WorkerService(configuration: configuration2, logger: logger)
        // The worker's run() returning is the normal end: shut the group down, not an error.
        let group = ServiceGroup(
            configuration: .init(
                services: [.init(service: worker, successTerminationBehavior: .gracefullyShutdownGroup)],
                gracefulShutdownSignals: [.sigterm, .sigint], logger: logger))
        FileHandle.standardOutput.write(Data("kiln-worker \(id) starting\n".utf8))
        try await group.run()
        if worker.exit != .done { throw ExitCode(worker.exit.rawValue) }
    }
}
