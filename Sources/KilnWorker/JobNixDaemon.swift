import Foundation

/// A nix-daemon of the job's own (#29 item 1). Every derivation of a Nix job is built by a daemon, and
/// the operator's shared daemon runs outside every limit Kiln puts on a job: a derivation's builder
/// could take the host's memory, processes and disk while the job itself stayed small. So a root
/// worker starts a daemon for each sandboxed Nix step inside the step's own cgroup: the daemon's
/// builders are its children and inherit that cgroup, so the job's memory and process limits hold for
/// them too, the step's wall-clock limit and cancel end them (the cgroup is swept), and their build
/// directories (`TMPDIR`) are on the job's size-limited workspace.
///
/// The daemon shares the host's store (as every forked daemon does: one SQLite database, path locks),
/// so what it builds stays in the store as a cache, as with the shared daemon. Its settings are the
/// operator's (`NIX_CONF_DIR` or /etc/nix) with these forced, because the job's guarantees rest on
/// them: builds sandboxed (a non-sandboxed builder would run with the host's network), no
/// substituters and no remote builders (nothing fetched, nothing built elsewhere, outside the limits),
/// only root trusted (the build's uid stays an untrusted client whatever the operator trusts), no
/// import-from-derivation, and Nix's own per-build `timeout` at the job's build timeout.
public struct JobNixDaemon: Sendable, Equatable {
    /// Host directory holding the daemon's socket (root's, 0711); bound read-only into the sandbox.
    public var socketDirectory: String
    /// Host directory for the daemon's build directories: on the job's workspace file system.
    public var buildDirectory: String
    /// The operator's Nix configuration directory (nil: Nix's default, /etc/nix).
    public var configurationDirectory: String?
    /// Nix's per-build `timeout`, seconds.
    public var timeoutSeconds: Int

    /// Where the socket's directory appears inside the sandbox.
    public static let sandboxSocketDirectory = "/run/kiln-nix-daemon"
    /// The client's `NIX_REMOTE` inside the sandbox.
    public static let sandboxRemote = "unix://\(sandboxSocketDirectory)/socket"
    /// A Unix socket path is at most 107 bytes (`sun_path` less its terminator).
    static let maxSocketPathBytes = 107

    public init(socketDirectory: String, buildDirectory: String, configurationDirectory: String?, timeoutSeconds: Int) {
        self.socketDirectory = socketDirectory
        self.buildDirectory = buildDirectory
        self.configurationDirectory = configurationDirectory
        self.timeoutSeconds = timeoutSeconds
    }

    public var socket: String { socketDirectory + "/socket" }

    /// The settings forced on the job's daemon, whatever the operator's configuration says.
    public var forcedOptions: [(name: String, value: String)] {
        [
            ("sandbox", "true"), ("substituters", ""), ("builders", ""), ("trusted-users", "root"),
            ("allow-import-from-derivation", "false"), ("timeout", String(timeoutSeconds)),
        ]
    }

    /// The daemon's command line (pure, so tests can inspect it).
    public var command: [String] {
        ["/usr/bin/nix-daemon"] + forcedOptions.flatMap { ["--option", $0.name, $0.value] }
    }

    /// The daemon's whole environment: nothing of the worker's but the configuration directory.
    public var environment: [String: String] {
        var env = ["PATH": "/usr/bin:/bin", "NIX_DAEMON_SOCKET_PATH": socket, "TMPDIR": buildDirectory, "HOME": "/homeless-shelter"]
        if let configurationDirectory { env["NIX_CONF_DIR"] = configurationDirectory }
        return env
    }

    /// Creates both directories (root's; the socket's traversable by the build uid, the build
    /// directory by the daemon's build users, as Nix's own /tmp is). Throws when the socket path would
    /// not fit a Unix socket address.
    public func prepare() throws {
        guard socket.utf8.count <= Self.maxSocketPathBytes else {
            throw BuildFailure.internalError(
                "build", "the job's nix-daemon socket path is \(socket.utf8.count) bytes, more than a Unix socket allows (\(Self.maxSocketPathBytes))")
        }
        for directory in [socketDirectory, buildDirectory] {
            try FileManager.default.createDirectory(atPath: directory, withIntermediateDirectories: true, attributes: [.posixPermissions: 0o711])
            // createDirectory keeps an existing directory's mode; the one wanted is set either way.
            guard chmod(directory, 0o711) == 0 else {
                throw BuildFailure.internalError("build", "cannot set the mode of \(directory): \(String(cString: strerror(errno)))")
            }
        }
        // An earlier step's daemon left its socket: a new daemon binds a fresh one.
        guard unlink(socket) == 0 || errno == ENOENT else {
            throw BuildFailure.internalError("build", "cannot remove the old nix-daemon socket: \(String(cString: strerror(errno)))")
        }
    }

    /// Waits until the daemon answers on its socket, or `attempts` × 50 ms have passed. (A connect to a
    /// local Unix socket returns at once, answered or refused, so polling it blocks no thread.)
    func waitUntilAnswering(attempts: Int = 400) async throws -> Bool {
        for _ in 0..<attempts {
            if NixDaemon.answers(socket: socket) { return true }
            try await Task.sleep(for: .milliseconds(50))
        }
        return false
    }
}
