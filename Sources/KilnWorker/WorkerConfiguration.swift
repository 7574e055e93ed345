import Foundation
import KilnBusClient

/// Everything a worker needs to know; filled from the `kiln-worker` command line.
public struct WorkerConfiguration: Sendable {
    public var bus: BusClient.Configuration
    public var workerID: String
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

    public init(bus: BusClient.Configuration, workerID: String, scratchDirectory: String, keyFile: String,
                limits: Limits = Limits(), toolchains: Toolchains = Toolchains(), tsmRoot: String = "/sys/kernel/config/tsm/report",
                builderID: String = "https://kiln.build/worker/local@v1", keepScratch: Bool = false, idleTimeout: Duration? = nil) {
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
        /// For `git fetch` (default 10 min).
        public var fetchTimeout: Duration = .seconds(10 * 60)
        /// Memory for the sandbox (cgroup memory.limit_in_bytes, else RLIMIT_AS). Default 8 GiB.
        public var memoryBytes: Int64 = 8 << 30
        /// Processes/threads in the sandbox (cgroup pids.max, else RLIMIT_NPROC). Default 1024.
        public var maxProcesses: Int = 1024
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
        /// `cargo vendor` output or a local registry, mounted read-only and used via source replacement.
        public var cargoVendorDirectory: String?
        /// Nix (through the nix-daemon at its default socket); nil disables Nix builds.
        public var nixEnabled = true
        public var bwrap = "/usr/bin/bwrap"
        public var git = "/usr/bin/git"
        public init() {}
    }
}
