import Foundation
import KilnTestSupport
import Testing

@testable import KilnWorker

/// The job's own nix-daemon (#29 item 1), without starting one: what it is told, what the sandbox sees.
/// `WorkerContainmentTests.aDerivationsBuilderIsHeldToTheJobsLimits` runs the real daemon.
@Suite struct JobNixDaemonTests {
    static let daemon = JobNixDaemon(
        socketDirectory: "/var/lib/kiln/s/nix-daemon", buildDirectory: "/var/lib/kiln/s/job/nix-build", configurationDirectory: "/etc/kiln-nix",
        timeoutSeconds: 900)

    /// The settings the job's guarantees rest on are on its command line, where the operator's
    /// nix.conf cannot override them (a command-line option wins over the configuration file).
    @Test func theJobsGuaranteesAreForcedOnTheCommandLine() {
        let c = Self.daemon.command
        #expect(c.first == "/usr/bin/nix-daemon")
        func option(_ name: String) -> String? {
            guard let i = c.indices.first(where: { c[$0] == "--option" && $0 + 2 < c.count && c[$0 + 1] == name }) else { return nil }
            return c[i + 2]
        }
        #expect(option("sandbox") == "true")
        #expect(option("substituters") == "")
        #expect(option("builders") == "")
        #expect(option("trusted-users") == "root")
        #expect(option("allow-import-from-derivation") == "false")
        #expect(option("timeout") == "900")
    }

    /// Its environment is built, not inherited: the socket, the build directories on the workspace, the
    /// operator's configuration, nothing of the worker's own (no broker credentials, no keys).
    @Test func theEnvironmentIsTheSocketTheWorkspaceAndTheConfigurationOnly() {
        let env = Self.daemon.environment
        #expect(env["NIX_DAEMON_SOCKET_PATH"] == "/var/lib/kiln/s/nix-daemon/socket")
        #expect(env["TMPDIR"] == "/var/lib/kiln/s/job/nix-build")
        #expect(env["NIX_CONF_DIR"] == "/etc/kiln-nix")
        #expect(Set(env.keys) == ["PATH", "NIX_DAEMON_SOCKET_PATH", "TMPDIR", "HOME", "NIX_CONF_DIR"])
    }

    /// The sandbox reaches the job's daemon at a fixed path and not the shared one: its socket
    /// directory under the read-only /nix is covered by an empty tmpfs.
    @Test func theSandboxSeesTheJobsSocketAndNotTheSharedOne() {
        var limits = WorkerConfiguration.Limits()
        limits.buildTimeout = .seconds(30)
        let sandbox = Sandbox(limits: limits, privateDirectory: "/tmp")
        var mounts = Sandbox.Mounts(source: "/s/src", output: "/s/out")
        mounts.nix = true
        let shared = sandbox.arguments(command: ["nix-build"], environment: [:], mounts: mounts)
        #expect(!shared.contains(JobNixDaemon.sandboxSocketDirectory))
        mounts.jobNixDaemon = Self.daemon
        let a = sandbox.arguments(command: ["nix-build"], environment: [:], mounts: mounts)
        let nix = try! #require(a.firstIndex(of: "/nix"))
        let hidden = try! #require(a.indices.first { a[$0] == "--tmpfs" && a[$0 + 1] == "/nix/var/nix/daemon-socket" })
        #expect(hidden > nix, "the tmpfs must come after /nix is bound, or /nix would cover it")
        let bind = try! #require(a.indices.first { a[$0] == "--ro-bind" && a[$0 + 2] == JobNixDaemon.sandboxSocketDirectory })
        #expect(a[bind + 1] == "/var/lib/kiln/s/nix-daemon")
        // With a build user, the socket's directory is staged like every other mount source.
        let dropping = Sandbox(limits: limits, buildUser: .init(uid: 4242, gid: 4242), privateDirectory: "/tmp")
        let chain = dropping.launchArguments(command: ["nix-build"], environment: [:], mounts: mounts, seccompFile: nil)
        let staged = try! #require(chain.indices.first { chain[$0] == "--ro-bind" && chain[$0 + 2] == JobNixDaemon.sandboxSocketDirectory })
        #expect(chain[staged + 1].hasPrefix(WorkerConfiguration.defaultStageDirectory + "/"))
        #expect(chain.contains("/var/lib/kiln/s/nix-daemon"), "root binds the real directory at the stage")
    }

    /// A socket path longer than a Unix socket address holds is refused with the reason, not bound
    /// truncated (where another path's socket could answer).
    @Test func aSocketPathTooLongForAUnixAddressIsRefused() throws {
        let dir = try TemporaryDirectory(prefix: "kiln-jobnix")
        var daemon = Self.daemon
        daemon.socketDirectory = dir.file(String(repeating: "d", count: 110))
        daemon.buildDirectory = dir.file("b")
        #expect(throws: BuildFailure.self) { try daemon.prepare() }
        daemon.socketDirectory = dir.file("s")
        try daemon.prepare()
        for path in [daemon.socketDirectory, daemon.buildDirectory] {
            var st = stat()
            #expect(stat(path, &st) == 0 && st.st_mode & 0o777 == 0o711, "\(path)")
        }
    }
}
