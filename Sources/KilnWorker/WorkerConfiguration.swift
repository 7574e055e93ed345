import Foundation
import KilnArchive
import KilnAttestation
import KilnBusClient

/// Everything a worker needs to know; filled from the `kiln-worker` command line.
public struct WorkerConfiguration: Sendable {
    public var bus: BusClient.Configuration
    public var workerID: String
    /// Who may send this worker build requests and control messages (`GatewayIdentity`).
    public var gateway = GatewayIdentity()
    /// This worker's private scratch directory; deleted on exit.
    public var scratchDirectory: String
    /// The farm's Ed25519 signing key (never visible inside the sandbox).
    public var keyFile: String
    public var limits: Limits
    public var toolchains: Toolchains
    /// `tsm` root (configfs-tsm); used when it exists.
    public var tsmRoot: String
    public var builderID: String
    /// Whether to delete the scratch directory on exit (keep it to debug).
    public var keepScratch: Bool
    /// How long to wait for a build request before exiting (nil: forever).
    public var idleTimeout: Duration?
    /// The unprivileged host uid/gid builds run as, and host-side reads of build output act as.
    /// Set (by default) when the worker runs as root; nil otherwise (the worker's own uid is used).
    public var buildUser: ConfinedDirectory.Credentials?
    /// An empty directory the sandbox launch chain mounts its staging tmpfs on (in a private mount
    /// namespace: the host never sees it).
    public var sandboxStageDirectory: String = Self.defaultStageDirectory
    /// Inside a TEE, sign with a key generated in memory for this one build and bound into the
    /// hardware report (no long-lived key in the VM); `false` uses the key file there too.
    public var ephemeralKeyInTEE: Bool = true
    /// Make the signing key in memory and have the pool that launched this worker certify it (a VM
    /// worker: no key file, no farm key, nothing that outlives the VM).
    public var certifiedKey = false
    /// Said in the worker's announcement and its provenance: `process`, `vm-kvm`, `vm-tcg`.
    public var isolation = "process"
    /// Whether a build may ask for network (`build_config.internet_access`).
    public var allowInternetBuilds = false
    /// Where digests of the worker's own executable and the toolchain's binaries are remembered
    /// across one-shot workers (`FileDigestCache`); nil hashes them for every build.
    public var digestCache: FileDigestCache?
    /// The farm's compiled-dependency cache (#31 item 3, docs/dependency-cache.md).
    public var dependencyCache = DependencyCacheSettings()

    public struct DependencyCacheSettings: Sendable {
        public var enabled = true
        /// Keys whose entries are used besides the farm key (the --key file's, or the key that
        /// certified this worker's in-memory key).
        public var trustedKeys: [PublicKey] = []
        public var maxEntryBytes: Int64 = 2 << 30
        public init() {}
    }

    /// Remembers digests in `directory`; false (and none remembered) when it is not this user's own
    /// directory closed to others.
    public mutating func useDigestCache(at directory: String, maxEntries: Int = FileDigestCache.defaultMaxEntries) -> Bool {
        digestCache = FileDigestCache(directory: directory, maxEntries: maxEntries)
        return digestCache != nil
    }

    /// Takes the digests a manifest lists (`FileDigestCache.addKnownDigests(fromFile:)`); after
    /// `useDigestCache(at:)`, which starts a new cache.
    public mutating func addKnownDigests(fromFile path: String) throws {
        var cache = digestCache ?? FileDigestCache()
        try cache.addKnownDigests(fromFile: path)
        digestCache = cache
    }

    public static let defaultStageDirectory = "/mnt"

    /// A uid no account uses, unique among this host's live workers (it derives from the pid), so two
    /// builds on one host never share a uid: 200000 + pid mod 100000.
    public static func defaultBuildUser() -> ConfinedDirectory.Credentials? {
        guard geteuid() == 0 else { return nil }
        let id = uid_t(200_000 + Int(getpid()) % 100_000)
        return .init(uid: id, gid: gid_t(id))
    }

    public init(
        bus: BusClient.Configuration, workerID: String, scratchDirectory: String, keyFile: String,
        limits: Limits = Limits(), toolchains: Toolchains = Toolchains(), tsmRoot: String = "/sys/kernel/config/tsm/report",
        builderID: String = "https://kiln.build/worker/local@v1", keepScratch: Bool = false, idleTimeout: Duration? = nil
    ) {
        self.bus = bus
        self.workerID = workerID
        self.scratchDirectory = scratchDirectory
        self.keyFile = keyFile
        self.limits = limits
        self.toolchains = toolchains
        self.tsmRoot = tsmRoot
        self.builderID = builderID
        self.keepScratch = keepScratch
        self.idleTimeout = idleTimeout
    }

    public struct Limits: Sendable {
        /// Wall clock for the sandboxed build (default 30 min).
        public var buildTimeout: Duration = .seconds(30 * 60)
        /// For getting a repository from the fetch service and checking it out (default 10 min).
        public var fetchTimeout: Duration = .seconds(10 * 60)
        /// Memory for the sandbox (cgroup memory.limit_in_bytes, else RLIMIT_AS). Default 8 GiB.
        public var memoryBytes: Int64 = 8 << 30
        /// Processes/threads in the sandbox (cgroup pids.max, else RLIMIT_NPROC). Default 1024.
        public var maxProcesses: Int = 1024
        /// CPUs the sandbox may use (cgroup v2 cpu.max; 0 = no limit).
        public var cpuQuota: Double = 0
        /// The workspace (/build/src + /build/out) and the sandbox's /tmp each get at most this much
        /// (a size-limited tmpfs). Default 10 GiB.
        public var diskBytes: Int64 = 10 << 30
        /// Largest single artifact or build-config file shipped (default 2 GiB) and most files (10 000).
        public var maxArtifactBytes: Int64 = 2 << 30
        public var maxArtifacts: Int = 10_000
        /// Log shipped in events; past it a note says how much was cut (default 1 MiB).
        public var maxLogBytes: Int = 1 << 20
        /// One log line longer than this is cut (default 4 KiB).
        public var maxLineBytes: Int = 4096
        /// Result chunk size (default 1 MiB) and how many are in flight.
        public var chunkSize: Int = 1 << 20
        public var chunkWindow: Int = 4
        /// Upload / ack waits before giving up on the gateway (default 10 min).
        public var deliveryTimeout: Duration = .seconds(600)
        public var heartbeatInterval: Duration = .seconds(5)
        public var archive = ArchiveLimits()
        /// Network for the build (only for a build whose build_config asks for it on a worker that allows it).
        public var network = false

        public struct ArchiveLimits: Sendable {
            public var maxEntries = 50_000
            public var maxBytes: Int64 = 2 << 30
            public var maxRatio = 200.0
            public init() {}
        }

        public init() {}
    }

    public struct Toolchains: Sendable {
        /// The Rust toolchain's sysroot (contains bin/cargo, bin/rustc); nil → found via `rustc --print sysroot`.
        public var rustSysroot: String?
        /// `cargo vendor` output or a local registry, mounted read-only and used via source replacement
        /// (then nothing is fetched).
        public var cargoVendorDirectory: String?
        /// Nix (through the nix-daemon at its default socket); nil disables Nix builds.
        public var nixEnabled = true
        /// The nix-daemon's socket (Nix's default unless the operator moved it).
        public var nixDaemonSocket = NixDaemon.defaultSocket
        /// Build each Nix job's derivations with a nix-daemon of its own, inside the job's cgroup and on
        /// its workspace (`JobNixDaemon`); needs root. Off: the shared daemon builds them, outside the
        /// job's limits.
        public var nixDaemonPerJob = true
        public var bwrap = "/usr/bin/bwrap"
        public var git = "/usr/bin/git"
        public init() {}
    }
}
