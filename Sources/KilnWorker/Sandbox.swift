import Foundation

/// The bubblewrap sandbox every build runs in (design §5 step 3).
///
/// Inside: a new user, PID, IPC, UTS and network namespace (no network at all, not even the host's
/// loopback, so the broker is unreachable); `/usr` and the toolchains read-only; only the job's
/// source (`/build/src`) and output (`/build/out`) directories writable; a cleared environment; all
/// capabilities dropped. Nothing else of the host is mounted: not the signing key, not the worker's
/// config, not its scratch root. Memory and process limits come from cgroups (rlimits when cgroups
/// are unavailable); the wall-clock limit and cancel kill the whole tree (bwrap's PID namespace dies
/// with its init, and the cgroup is swept).
public struct Sandbox: Sendable {
    public struct Mounts: Sendable {
        /// Host directory mounted read-write at /build/src.
        public var source: String
        /// Host directory mounted read-write at /build/out.
        public var output: String
        /// Read-only mounts: host path → sandbox path.
        public var readOnly: [(host: String, sandbox: String)] = []
        /// Bind /nix read-only and let the client reach the nix-daemon socket.
        public var nix = false

        public init(source: String, output: String) {
            self.source = source
            self.output = output
        }
    }

    public static let sourcePath = "/build/src"
    public static let outputPath = "/build/out"

    public let bwrap: String
    public let limits: WorkerConfiguration.Limits

    public init(bwrap: String = "/usr/bin/bwrap", limits: WorkerConfiguration.Limits) {
        self.bwrap = bwrap
        self.limits = limits
    }

    /// The bwrap command line (pure, so tests can inspect it).
    public func arguments(command: [String], environment: [String: String], mounts: Mounts) -> [String] {
        var a = [bwrap, "--unshare-all", "--unshare-user", "--uid", "1000", "--gid", "1000", "--cap-drop", "ALL",
                 "--die-with-parent", "--new-session", "--hostname", "kiln-sandbox",
                 "--ro-bind", "/usr", "/usr",
                 "--symlink", "usr/bin", "/bin", "--symlink", "usr/lib", "/lib", "--symlink", "usr/lib64", "/lib64",
                 "--symlink", "usr/sbin", "/sbin"]
        // The few files of /etc that compilers and linkers need (no secrets: not shadow, not ssl keys).
        for f in ["/etc/alternatives", "/etc/ld.so.cache", "/etc/ld.so.conf", "/etc/ld.so.conf.d", "/etc/passwd", "/etc/group",
                  "/etc/nsswitch.conf", "/etc/localtime"] where FileManager.default.fileExists(atPath: f) {
            a += ["--ro-bind", f, f]
        }
        if mounts.nix {
            a += ["--ro-bind", "/nix", "/nix"]
            if FileManager.default.fileExists(atPath: "/etc/nix") { a += ["--ro-bind", "/etc/nix", "/etc/nix"] }
        }
        a += ["--proc", "/proc", "--dev", "/dev", "--tmpfs", "/tmp", "--dir", "/build"]
        for m in mounts.readOnly { a += ["--ro-bind", m.host, m.sandbox] }
        a += ["--bind", mounts.source, Sandbox.sourcePath, "--bind", mounts.output, Sandbox.outputPath,
              "--chdir", Sandbox.sourcePath, "--clearenv"]
        for key in environment.keys.sorted() { a += ["--setenv", key, environment[key]!] }
        a += ["--"] + command
        return a
    }

    public struct Outcome: Sendable {
        public var process: ProcessRunner.Outcome
        public var hitMemoryLimit: Bool
        public var hitProcessLimit: Bool
    }

    /// Runs `command` inside the sandbox under the configured limits.
    public func run(name: String, command: [String], environment: [String: String], mounts: Mounts, cancel: CancelSwitch?,
                    onLine: @escaping @Sendable (ProcessRunner.Stream, String) -> Void) async throws -> Outcome {
        var argv = arguments(command: command, environment: environment, mounts: mounts)
        let cgroup = CgroupLimits.create(name: "kiln-\(name)-\(getpid())", memoryBytes: limits.memoryBytes, maxProcesses: limits.maxProcesses)
        if let cgroup {
            argv = cgroup.wrap(argv)
        } else {
            // No writable cgroups: per-process rlimits (weaker: RLIMIT_NPROC counts the whole uid).
            argv = ["/usr/bin/prlimit", "--as=\(limits.memoryBytes)", "--nproc=\(limits.maxProcesses)", "--"] + argv
        }
        defer { cgroup?.remove() }
        var sweep: (@Sendable () -> Void)?
        if let cgroup { sweep = { cgroup.killAll() } }
        let outcome = try await ProcessRunner.run(argv[0], Array(argv.dropFirst()), environment: ["PATH": "/usr/bin:/bin"],
                                                  timeout: limits.buildTimeout, cancel: cancel, maxLineBytes: limits.maxLineBytes,
                                                  afterExit: sweep, onLine: onLine)
        cgroup?.killAll()
        return Outcome(process: outcome, hitMemoryLimit: cgroup?.hitMemoryLimit ?? false, hitProcessLimit: cgroup?.hitProcessLimit ?? false)
    }
}
