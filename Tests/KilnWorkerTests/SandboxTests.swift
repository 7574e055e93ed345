import Foundation
import KilnArchive
import KilnTestSupport
import NIOConcurrencyHelpers
import Testing

@testable import KilnHost
@testable import KilnWorker

@Suite struct SandboxTests {
    static let buildUser = WorkerConfiguration.defaultBuildUser()

    func run(_ script: String, dir: TemporaryDirectory? = nil, limits: (inout WorkerConfiguration.Limits) -> Void = { _ in }) async throws
        -> (Sandbox.Outcome, [String])
    {
        let dir = try dir ?? TemporaryDirectory(prefix: "kiln-sandbox")
        for sub in ["src", "out"] {
            try FileManager.default.createDirectory(atPath: dir.file(sub), withIntermediateDirectories: true)
            if let u = Self.buildUser { chown(dir.file(sub), u.uid, u.gid) }
        }
        var l = WorkerConfiguration.Limits()
        l.buildTimeout = .seconds(30)
        limits(&l)
        let lines = NIOLockedValueBox<[String]>([])
        let sandbox = Sandbox(limits: l, buildUser: Self.buildUser, privateDirectory: dir.path)
        let outcome = try await sandbox.run(
            name: "t\(UInt32.random(in: 0...UInt32.max))", command: ["/bin/sh", "-c", script],
            environment: ["PATH": "/usr/bin:/bin"],
            mounts: .init(source: dir.file("src"), output: dir.file("out")), cancel: nil
        ) { _, line in
            lines.withLockedValue { $0.append(line) }
        }
        return (outcome, lines.withLockedValue { $0 })
    }

    @Test func memoryLimitIsReported() async throws {
        let (o, lines) = try await run("python3 -c 'x = bytearray(600 * 1024 * 1024)'") { $0.memoryBytes = 128 << 20 }
        #expect(!o.process.succeeded)
        #expect(o.hitMemoryLimit, "\(o.process.description) \(lines)")
    }

    @Test func processLimitIsReported() async throws {
        let (o, _) = try await run("for i in $(seq 200); do sleep 30 & done; wait") { $0.maxProcesses = 20 }
        #expect(o.hitProcessLimit)
    }

    @Test func timeoutKillsTheTree() async throws {
        let start = ContinuousClock.now
        let (o, _) = try await run("sleep 300 & sleep 300 & wait") { $0.buildTimeout = .milliseconds(500) }
        #expect(o.process.timedOut)
        #expect(ContinuousClock.now - start < .seconds(60), "the 300 s sleeps were killed, not waited for")
    }

    /// The build's uid maps to an unprivileged host uid, never to host root: what it writes is owned
    /// by that uid on the host, and a root-only file handed in by mistake stays unreadable.
    @Test func buildRunsAsAnUnprivilegedHostUser() async throws {
        guard let user = Self.buildUser else { return }
        let dir = try TemporaryDirectory(prefix: "kiln-sandbox")
        try FileManager.default.createDirectory(atPath: dir.file("src"), withIntermediateDirectories: true)
        try "secret".write(toFile: dir.file("src/root-only"), atomically: false, encoding: .utf8)
        chmod(dir.file("src/root-only"), 0o600)
        let (o, lines) = try await run("id -u; echo made > /build/out/made; cat /build/src/root-only && echo READ || echo refused", dir: dir)
        #expect(o.process.succeeded, "\(lines)")
        #expect(lines.contains("refused"), "\(lines)")
        var st = stat()
        #expect(lstat(dir.file("out/made"), &st) == 0)
        #expect(st.st_uid == user.uid, "a file the build wrote is owned by host uid \(st.st_uid)")
        #expect(st.st_uid != 0)
    }

    /// No nested user namespaces, no mounts, no keyrings, no io_uring, no ptrace of others.
    @Test func kernelSurfaceIsNarrowed() async throws {
        let script = """
            unshare -U true 2>/dev/null && echo PROBE userns=ALLOWED || echo PROBE userns=refused
            unshare -r true 2>/dev/null && echo PROBE rootmap=ALLOWED || echo PROBE rootmap=refused
            python3 - <<'PY'
            import ctypes, os
            libc = ctypes.CDLL(None, use_errno=True)
            def probe(name, nr, *args):
                r = libc.syscall(nr, *args)
                print("PROBE %s=%s" % (name, "ALLOWED" if r >= 0 else "refused(%d)" % ctypes.get_errno()), flush=True)
            probe("keyctl", 250, 0, -3, 0, 0, 0)       # KEYCTL_GET_KEYRING_ID of the session keyring
            probe("add_key", 248, b"user", b"kiln", b"x", 1, -3)
            probe("io_uring_setup", 425, 8, ctypes.create_string_buffer(120))
            probe("bpf", 321, 0, 0, 0)
            probe("mount", 165, b"none", b"/tmp", b"tmpfs", 0, 0)
            probe("ptrace", 101, 16, 1, 0, 0)          # PTRACE_ATTACH to pid 1
            probe("perf_event_open", 298, 0, 0, -1, -1, 0)
            PY
            """
        let (o, lines) = try await run(script)
        #expect(o.process.succeeded, "\(lines)")
        let probes = lines.filter { $0.hasPrefix("PROBE ") }
        #expect(probes.count == 9, "\(lines)")
        #expect(!probes.contains { $0.contains("ALLOWED") }, "\(probes)")
        #expect(probes.contains("PROBE io_uring_setup=refused(\(ENOSYS))"), "\(probes)")
    }

    /// The sandbox's /tmp is a size-limited tmpfs: filling it fails inside, the host is untouched.
    @Test func tmpIsSizeLimited() async throws {
        let (o, lines) = try await run("dd if=/dev/zero of=/tmp/hog bs=1M count=64 2>&1; echo exit=$?") { $0.diskBytes = 8 << 20 }
        #expect(o.process.succeeded)
        #expect(lines.contains { $0.contains("No space left on device") }, "\(lines)")
    }

    @Test func argumentsHideTheHost() {
        let s = Sandbox(limits: .init(), privateDirectory: "/p")
        let args = s.arguments(command: ["true"], environment: ["A": "1"], mounts: .init(source: "/s", output: "/o"))
        #expect(args.contains("--unshare-all"))
        #expect(args.contains("--disable-userns"))
        #expect(args.contains("--seccomp"))
        #expect(args.contains("--clearenv"))
        #expect(!args.contains("/root"))
        #expect(!args.contains("/etc/nix"))
        #expect(!args.contains { $0 == "/" })
    }

    /// With a build user, bwrap receives only staged paths and runs after setpriv dropped to that uid.
    @Test func launchChainDropsPrivilegesBeforeBwrap() {
        let s = Sandbox(limits: .init(), buildUser: .init(uid: 201_234, gid: 201_234), stageDirectory: "/mnt", privateDirectory: "/p")
        var mounts = Sandbox.Mounts(source: "/scratch/job/src", output: "/scratch/job/out")
        mounts.readOnly = [("/root/.rustup/toolchains/x", "/opt/rust")]
        let argv = s.launchArguments(command: ["cargo"], environment: [:], mounts: mounts, seccompFile: "/p/seccomp.bpf")
        let setpriv = argv.firstIndex(of: "/usr/bin/setpriv")!
        let bwrap = argv.firstIndex(of: "/usr/bin/bwrap")!
        #expect(setpriv < bwrap)
        #expect(argv[setpriv...].starts(with: ["/usr/bin/setpriv", "--reuid", "201234", "--regid", "201234", "--clear-groups", "--no-new-privs"]))
        let inner = Array(argv[bwrap...])
        #expect(!inner.contains("/root/.rustup/toolchains/x"), "bwrap must not need to traverse /root")
        #expect(inner.contains("/mnt/2"))
        #expect(argv.first == "/usr/bin/unshare")
    }
}

/// cgroup v2 on a fake cgroupfs tree (this machine may have only v1): the right files get the right
/// values, and the limits' events are read back.
@Suite struct CgroupV2Tests {
    @Test func limitsAreWrittenAndEventsRead() throws {
        let root = try TemporaryDirectory(prefix: "kiln-fake-cgroup")
        try FileManager.default.writeFile(atPath: root.file("cgroup.controllers"), contents: Data("cpu memory pids".utf8))
        try FileManager.default.createDirectory(atPath: root.file("system.slice/kiln-worker.service"), withIntermediateDirectories: true)
        let c = try #require(
            CgroupLimits.create(
                name: "kiln-job", memoryBytes: 256 << 20, maxProcesses: 64, cpuQuota: 1.5,
                root: root.path, ownCgroup: "/system.slice/kiln-worker.service"))
        let dir = root.file("system.slice/kiln-worker.service/kiln-job")
        #expect(c.version == .v2(dir))
        func read(_ f: String) -> String? { CgroupLimits.read(f) }
        #expect(read(dir + "/memory.max") == "\(256 << 20)")
        #expect(read(dir + "/memory.swap.max") == "0")
        #expect(read(dir + "/pids.max") == "64")
        #expect(read(dir + "/cpu.max") == "150000 100000")
        #expect(read(root.file("system.slice/kiln-worker.service/cgroup.subtree_control")) == "+memory +pids +cpu")
        #expect(c.wrap(["true"]).contains(dir + "/cgroup.procs"))
        #expect(!c.hitMemoryLimit && !c.hitProcessLimit)
        try "low 0\nhigh 0\nmax 3\noom 1\noom_kill 1\n".write(toFile: dir + "/memory.events", atomically: false, encoding: .utf8)
        try "max 7\n".write(toFile: dir + "/pids.events", atomically: false, encoding: .utf8)
        #expect(c.hitMemoryLimit && c.hitProcessLimit)
        c.killAll()
        #expect(read(dir + "/cgroup.kill") == "1", "v2 kills the whole group with cgroup.kill")
    }

    @Test func v1IsChosenWhereThereIsNoUnifiedHierarchy() throws {
        let root = try TemporaryDirectory(prefix: "kiln-fake-cgroup")
        for c in ["memory", "pids"] { try FileManager.default.createDirectory(atPath: root.file(c), withIntermediateDirectories: true) }
        let c = try #require(CgroupLimits.create(name: "kiln-job", memoryBytes: 1 << 20, maxProcesses: 8, root: root.path))
        #expect(c.version == .v1(memory: root.file("memory/kiln-job"), pids: root.file("pids/kiln-job")))
        #expect(CgroupLimits.read(root.file("pids/kiln-job/pids.max")) == "8")
    }
}
