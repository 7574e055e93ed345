import Foundation
import Synchronization

/// A PostgreSQL server of the test's own (Debian's postgresql package): `initdb` into a temporary
/// directory and `postgres` listening on a Unix socket there only, run as the `postgres` user
/// (PostgreSQL refuses root). Nothing of the machine's own clusters is touched (#15).
public final class PostgresProcess: Sendable {
    public static let bin = "/usr/lib/postgresql/15/bin"
    public let directory: TemporaryDirectory
    private let current: Mutex<LaunchedProcess>

    /// The URL `--database` takes: user `kiln`, database `postgres`, over the socket.
    public var url: String { "postgres://kiln@localhost/postgres?host=\(directory.file("socket"))" }

    public init() async throws {
        directory = try TemporaryDirectory(prefix: "kiln-pg")
        chmod(directory.path, 0o755)
        for sub in ["data", "socket"] {
            try FileManager.default.createDirectory(atPath: directory.file(sub), withIntermediateDirectories: true)
            try await Command.run("/bin/chown", ["postgres:postgres", directory.file(sub)])
        }
        try await Command.run(
            "/usr/sbin/runuser", ["-u", "postgres", "--", Self.bin + "/initdb", "-D", directory.file("data"), "-A", "trust", "-U", "kiln", "--no-sync"])
        current = Mutex(try await Self.start(directory))
    }

    private static func start(_ directory: TemporaryDirectory) async throws -> LaunchedProcess {
        let process = try await LaunchedProcess(
            "/usr/sbin/runuser",
            [
                "-u", "postgres", "--", Self.bin + "/postgres", "-D", directory.file("data"), "-k", directory.file("socket"), "-c", "listen_addresses=",
                "-c", "fsync=off", "-c", "max_connections=200",
            ])
        _ = try await process.waitForLine(what: "ready to accept connections") { $0.contains("database system is ready to accept connections") }
        return process
    }

    /// The running server process (a new one after `restart`).
    public var process: LaunchedProcess { current.withLock { $0 } }

    /// Stops the server at once (as a crash would) and starts it again on the same data and socket:
    /// every client connection breaks and must be made again.
    public func restart(downFor pause: Duration = .zero) async throws {
        let postmaster = self.postmaster
        stop()
        // The postmaster (not runuser) must be gone before another may start on the same data.
        let gone = await eventually(within: .seconds(30)) { postmaster.map { kill($0, 0) != 0 } ?? true }
        guard gone else { throw LaunchError("postgres did not stop within 30 s") }
        if pause > .zero { try await Task.sleep(for: pause) }
        let next = try await Self.start(directory)
        current.withLock { $0 = next }
    }

    /// Signals the postmaster itself (runuser does not pass a SIGTERM on): SIGQUIT, an immediate
    /// shutdown that takes its backends with it.
    public func stop() {
        if let pid = postmaster { kill(pid, SIGQUIT) }
        process.stop()
    }

    private var postmaster: Int32? {
        guard let text = try? String(contentsOfFile: directory.file("data/postmaster.pid"), encoding: .utf8),
            let pid = text.split(separator: "\n").first.flatMap({ Int32($0) }), pid > 1
        else { return nil }
        return pid
    }

    deinit { stop() }
}
