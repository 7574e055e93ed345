import Foundation
import KilnArchive
import KilnHost
import KilnProcess
import Synchronization

/// The bubblewrap sandbox every build runs in (design §5 step 3).
///
/// Inside: a new user, PID, IPC, UTS and network namespace (no network at all, not even the host's
/// loopback, so the broker is unreachable); `/usr` and the toolchains read-only; only the job's
/// source (`/build/src`) and output (`/build/out`) directories writable; a cleared environment; all
/// capabilities dropped; no further user namespaces (`--disable-userns`); a seccomp filter refusing
/// mounts, namespaces, keyrings, eBPF, ptrace, io_uring, perf and module loading. Nothing else of the
/// host is mounted: not the signing key, not the worker's config, not its scratch root.
///
/// When the worker is root, the sandbox does not run as root: the launch chain is
/// `sh` (joins the cgroups) → `unshare --mount` (a private mount namespace where root binds each
/// mount source at a staging directory, so the build uid need not traverse e.g. `/root`) →
/// `setpriv` (drops to the unprivileged build uid/gid, no supplementary groups, no_new_privs) →
/// `bwrap` (unprivileged: its user namespace maps to the build uid, never to host root). A build that
/// escaped every layer would be an ordinary unprivileged user, unable to read the root-only key.
///
/// Memory, process and CPU limits come from cgroups (rlimits when cgroups are unavailable); the
/// wall-clock limit and cancel kill the whole tree (bwrap's PID namespace dies with its init, and the
/// cgroup is swept).
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
        /// With `nix`: the job's own nix-daemon, started in the sandbox's cgroup by `run`; its socket's
        /// directory is bound at `JobNixDaemon.sandboxSocketDirectory` and the shared daemon's socket
        /// directory is hidden (nil: the client reaches the operator's shared daemon).
        public var jobNixDaemon: JobNixDaemon?

        public init(source: String, output: String) {
            self.source = source
            self.output = output
        }
    }

    public static let sourcePath = "/build/src"
    public static let outputPath = "/build/out"

    public let bwrap: String
    public let limits: WorkerConfiguration.Limits
    /// The unprivileged host uid/gid the build runs as (nil: the worker's own, when it is not root).
    public let buildUser: ConfinedDirectory.Credentials?
    /// Where mount sources are staged inside the launch chain's private mount namespace.
    public let stageDirectory: String
    /// A directory only the worker can write (its scratch): holds the seccomp program.
    public let privateDirectory: String

    public init(
        bwrap: String = "/usr/bin/bwrap", limits: WorkerConfiguration.Limits, buildUser: ConfinedDirectory.Credentials? = nil,
        stageDirectory: String = WorkerConfiguration.defaultStageDirectory, privateDirectory: String
    ) {
        self.bwrap = bwrap
        self.limits = limits
        self.buildUser = buildUser
        self.stageDirectory = stageDirectory
        self.privateDirectory = privateDirectory
    }

    /// The seccomp program's descriptor inside the launch chain.
    static let seccompFD = 9

    /// The bwrap command line (pure, so tests can inspect it). Mount sources are used as given; the
    /// launch chain (`launchArguments`) rewrites them to staged paths when it drops privileges.
    public func arguments(command: [String], environment: [String: String], mounts: Mounts, seccomp: Bool = true) -> [String] {
        var a = [
            bwrap, "--unshare-all", "--unshare-user", "--uid", "1000", "--gid", "1000", "--disable-userns", "--cap-drop", "ALL",
            "--die-with-parent", "--new-session", "--hostname", "kiln-sandbox",
            "--ro-bind", "/usr", "/usr",
            "--symlink", "usr/bin", "/bin", "--symlink", "usr/lib", "/lib", "--symlink", "usr/lib64", "/lib64",
            "--symlink", "usr/sbin", "/sbin",
        ]
        // The few files of /etc that compilers and linkers need (no secrets: not shadow, not ssl keys).
        var etc = [
            "/etc/alternatives", "/etc/ld.so.cache", "/etc/ld.so.conf", "/etc/ld.so.conf.d", "/etc/passwd", "/etc/group",
            "/etc/nsswitch.conf", "/etc/localtime",
        ]
        if limits.network {
            // A build that asked for network (and was allowed it) keeps the host's network namespace,
            // with what name resolution and TLS need: it is not hermetic, and its provenance says so.
            a.insert("--share-net", at: 2)
            etc += ["/etc/resolv.conf", "/etc/hosts", "/etc/ssl/certs", "/etc/ca-certificates"]
        }
        for f in etc where FileManager.default.fileExists(atPath: f) {
            a += ["--ro-bind", f, f]
        }
        if mounts.nix {
            // The store and the daemon's socket; not /etc/nix (the operator's configuration and any
            // secrets in it): the client's defaults suffice, and the daemon decides what is allowed.
            a += ["--ro-bind", "/nix", "/nix"]
            if let daemon = mounts.jobNixDaemon {
                // Only the job's daemon: the shared one would build outside the job's limits.
                a += ["--tmpfs", "/nix/var/nix/daemon-socket", "--ro-bind", daemon.socketDirectory, JobNixDaemon.sandboxSocketDirectory]
            }
        }
        a += ["--proc", "/proc", "--dev", "/dev", "--size", String(limits.diskBytes), "--tmpfs", "/tmp", "--dir", "/build"]
        if seccomp { a += ["--seccomp", String(Self.seccompFD)] }
        for m in mounts.readOnly { a += ["--ro-bind", m.host, m.sandbox] }
        a += [
            "--bind", mounts.source, Sandbox.sourcePath, "--bind", mounts.output, Sandbox.outputPath,
            "--chdir", Sandbox.sourcePath, "--clearenv",
        ]
        for key in environment.keys.sorted() { a += ["--setenv", key, environment[key]!] }
        a += ["--"] + command
        return a
    }

    public struct Outcome: Sendable {
        public var process: ProcessRunner.Outcome
        public var hitMemoryLimit: Bool
        public var hitProcessLimit: Bool
    }

    /// The whole launch chain for a bwrap command line (pure). With a build user: root stages every
    /// mount source in a private mount namespace, then drops to the build uid before bwrap runs.
    /// The seccomp program is opened (as root) on descriptor 9 from `seccompFile`.
    public func launchArguments(command: [String], environment: [String: String], mounts: Mounts, seccompFile: String?) -> [String] {
        var staged = mounts
        var binds: [String] = []
        if buildUser != nil {
            func stage(_ host: String) -> String {
                binds.append(host)
                return stageDirectory + "/\(binds.count - 1)"
            }
            staged.source = stage(mounts.source)
            staged.output = stage(mounts.output)
            staged.readOnly = mounts.readOnly.map { (stage($0.host), $0.sandbox) }
            if let daemon = mounts.jobNixDaemon { staged.jobNixDaemon?.socketDirectory = stage(daemon.socketDirectory) }
        }
        let inner = arguments(command: command, environment: environment, mounts: staged, seccomp: seccompFile != nil)
        var chain: [String] = []
        // sh: open the seccomp program as root on fd 9, then exec the rest.
        let openSeccomp = seccompFile != nil ? "exec 9<\"$0\" || exit 125; " : ""
        guard let user = buildUser else {
            return ["/bin/sh", "-c", openSeccomp + "exec \"$@\"", seccompFile ?? "-"] + inner
        }
        // In a private mount namespace: a tmpfs at the stage, one bind per source, then drop privileges.
        let script =
            openSeccomp + """
                stage="$1"; shift; mount -t tmpfs -o mode=0755,size=64k kiln-stage "$stage" || exit 125; i=0; \
                while [ "$1" != "--" ]; do mkdir "$stage/$i" && mount --bind "$1" "$stage/$i" || exit 125; i=$((i+1)); shift; done; shift; \
                exec "$@"
                """
        chain = ["/usr/bin/unshare", "--mount", "--propagation", "private", "--", "/bin/sh", "-c", script, seccompFile ?? "-", stageDirectory]
        chain += binds + ["--"]
        // Nix jobs keep one supplementary group: the one the daemon's socket directory admits
        // (Debian: nix-users), as for any ordinary user. The daemon then sees an untrusted client.
        var groups = ["--clear-groups"]
        if mounts.nix, let gid = Self.nixSocketGroup() { groups = ["--groups", String(gid)] }
        chain += ["/usr/bin/setpriv", "--reuid", String(user.uid), "--regid", String(user.gid)] + groups + ["--no-new-privs", "--"]
        return chain + inner
    }

    /// The group owning the nix-daemon's socket directory when it is not world-accessible.
    static func nixSocketGroup(_ directory: String = "/nix/var/nix/daemon-socket") -> gid_t? {
        var st = stat()
        guard stat(directory, &st) == 0, (st.st_mode & 0o005) != 0o005, st.st_gid != 0 else { return nil }
        return st.st_gid
    }

    /// Runs `command` inside the sandbox under the configured limits.
    public func run(
        name: String, command: [String], environment: [String: String], mounts: Mounts, cancel: CancelSwitch?,
        onLine: @escaping @Sendable (ProcessRunner.Stream, String) -> Void
    ) async throws -> Outcome {
        let seccompFile = try SeccompFilter.file(in: privateDirectory)
        var argv = launchArguments(command: command, environment: environment, mounts: mounts, seccompFile: seccompFile)
        let cgroup = CgroupLimits.create(
            name: "kiln-\(name)-\(getpid())", memoryBytes: limits.memoryBytes, maxProcesses: limits.maxProcesses,
            cpuQuota: limits.cpuQuota)
        if let cgroup {
            argv = cgroup.wrap(argv)
        } else {
            // No writable cgroups: per-process rlimits (weaker: RLIMIT_NPROC counts the whole uid).
            argv = ["/usr/bin/prlimit", "--as=\(limits.memoryBytes)", "--nproc=\(limits.maxProcesses)", "--"] + argv
        }
        defer { cgroup?.remove() }
        var sweepAfterExit: (@Sendable () -> Void)?
        if let cgroup { sweepAfterExit = { cgroup.killAll() } }
        let sweep = sweepAfterExit
        let launch = argv
        let runBuild: @Sendable () async throws -> ProcessRunner.Outcome = { [limits] in
            let argv = launch
            return try await ProcessRunner.run(
                argv[0], Array(argv.dropFirst()), environment: ["PATH": "/usr/bin:/bin"],
                timeout: limits.buildTimeout, cancel: cancel, maxLineBytes: limits.maxLineBytes,
                afterExit: sweep, onLine: onLine)
        }
        let outcome: ProcessRunner.Outcome
        if let daemon = mounts.jobNixDaemon {
            outcome = try await Self.withJobNixDaemon(daemon, cgroup: cgroup, limits: limits, body: runBuild)
        } else {
            outcome = try await runBuild()
        }
        cgroup?.killAll()
        return Outcome(process: outcome, hitMemoryLimit: cgroup?.hitMemoryLimit ?? false, hitProcessLimit: cgroup?.hitProcessLimit ?? false)
    }
}

extension Sandbox {
    /// Runs `body` (the sandboxed Nix client) while the job's own nix-daemon answers. The daemon joins
    /// the sandbox's cgroup before it execs (without cgroups: the same address-space rlimit), so every
    /// builder it forks is held to the sandbox's memory and process limits; when `body` returns, the
    /// daemon is stopped and the cgroup swept, which ends any builder left.
    static func withJobNixDaemon(
        _ daemon: JobNixDaemon, cgroup: CgroupLimits?, limits: WorkerConfiguration.Limits,
        body: @escaping @Sendable () async throws -> ProcessRunner.Outcome
    ) async throws -> ProcessRunner.Outcome {
        try daemon.prepare()
        var argv = daemon.command
        if let cgroup {
            argv = cgroup.wrap(argv)
        } else {
            argv = ["/usr/bin/prlimit", "--as=\(limits.memoryBytes)", "--"] + argv
        }
        // The daemon's own words (a line per client connection, its errors): the last few, for a
        // daemon that does not start; builders' output reaches the client, not this.
        let said = RecentLines(keeping: 20)
        let stop = CancelSwitch()
        let daemonArguments = argv
        let daemonEnvironment = daemon.environment
        let daemonTimeout = limits.buildTimeout + .seconds(60)
        return try await withThrowingTaskGroup(of: Void.self) { group in
            group.addTask {
                _ = try await ProcessRunner.run(
                    daemonArguments[0], Array(daemonArguments.dropFirst()), environment: daemonEnvironment,
                    timeout: daemonTimeout, cancel: stop, onLine: { _, line in said.append(line) })
            }
            defer { stop.fire() }
            guard try await daemon.waitUntilAnswering() else {
                throw BuildFailure.internalError("build", "the job's nix-daemon did not start: \(said.lines.joined(separator: " | "))")
            }
            let outcome = try await body()
            stop.fire()
            cgroup?.killAll()
            try await group.waitForAll()
            return outcome
        }
    }
}

/// The last `keeping` lines of a stream, for an error message.
final class RecentLines: Sendable {
    private let state = Mutex<[String]>([])
    let keeping: Int
    init(keeping: Int) { self.keeping = keeping }
    func append(_ line: String) {
        state.withLock { lines in
            lines.append(line)
            if lines.count > keeping { lines.removeFirst(lines.count - keeping) }
        }
    }
    var lines: [String] { state.withLock { $0 } }
}
