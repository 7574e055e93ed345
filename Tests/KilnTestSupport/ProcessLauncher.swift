import Foundation
import KilnProcess
import NIOConcurrencyHelpers

/// Locates the package's built executables (next to the test bundle).
public enum BuiltProducts {
    public static var directory: String {
        if let dir = ProcessInfo.processInfo.environment["KILN_BIN_DIR"] { return dir }
        var url = URL(fileURLWithPath: CommandLine.arguments[0]).resolvingSymlinksInPath()
        // …/.build/<triple>/debug/kilnPackageTests.xctest[/…]
        while url.path != "/" {
            let candidate = url.deletingLastPathComponent()
            if FileManager.default.isExecutableFile(atPath: candidate.appendingPathComponent("kiln-broker").path) {
                return candidate.path
            }
            url = candidate
        }
        return FileManager.default.currentDirectoryPath + "/.build/debug"
    }

    public static func path(_ name: String) -> String { directory + "/" + name }
}

/// A child process started by a test, with its output (stdout and stderr together) captured line by
/// line. Killed on `stop()` or deinit.
///
/// A `ChildProcess`: it inherits no descriptor but its output pipe (another test's daemon spawned at
/// the same moment cannot hold this one's pipe or exit notification), and threads of its own read its
/// output and reap it, so nothing here ever occupies one of the cooperative pool's few threads.
public final class LaunchedProcess: Sendable {
    private let child: ChildProcess
    private let reader: PipeReader
    private let lines = NIOLockedValueBox<[String]>([])
    public let name: String
    public var pid: Int32 { child.pid }

    public init(_ executable: String, _ arguments: [String], environment: [String: String]? = nil) async throws {
        name = (executable as NSString).lastPathComponent
        let pipe = try PipeReader.pipe()
        defer { close(pipe.write) }
        do {
            child = try ChildProcess(
                executable: executable, arguments: arguments, environment: environment,
                stdout: pipe.write, stderr: pipe.write)
        } catch {
            close(pipe.read)
            throw error
        }
        let lines = self.lines
        reader = PipeReader(descriptor: pipe.read, name: "output of \(name)") { line in lines.withLockedValue { $0.append(line) } }
    }

    public var output: [String] { lines.withLockedValue { $0 } }
    public var isRunning: Bool { child.isRunning }

    /// Waits for an output line with `prefix` and returns the rest of it.
    public func waitForLine(prefix: String, timeout: Duration = .seconds(30)) async throws -> String {
        let line = try await waitForLine(what: "'\(prefix)'", timeout: timeout) { $0.hasPrefix(prefix) }
        return String(line.dropFirst(prefix.count))
    }

    /// Waits for an output line `matches` accepts; fails as soon as the process exits without one.
    @discardableResult
    public func waitForLine(what: String, timeout: Duration = .seconds(30), where matches: (String) -> Bool) async throws -> String {
        let seen = try await eventually(within: timeout) { () throws -> String? in
            if let line = output.first(where: matches) { return line }
            if let ended = child.termination {
                try? await Task.sleep(for: .milliseconds(50))  // its last lines may still be in the pipe
                if let line = output.first(where: matches) { return line }
                throw LaunchError("\(name) exited (\(ended)) before printing \(what): \(output.suffix(20).joined(separator: "\n"))")
            }
            return nil
        }
        guard let seen else { throw LaunchError("\(name) did not print \(what) within \(timeout): \(output.suffix(20).joined(separator: "\n"))") }
        return seen
    }

    /// A kiln-worker is ready when it has subscribed for work (it logs "ready … toolchains").
    public func waitUntilWorkerReady(timeout: Duration = .seconds(30)) async throws {
        try await waitForLine(what: "that it is ready", timeout: timeout) { $0.contains("ready") && $0.contains("toolchains") }
    }

    public func signal(_ sig: Int32) { child.signal(sig) }

    /// Waits for the process to exit and returns its exit code (or the signal that killed it).
    @discardableResult
    public func waitForExit(timeout: Duration = .seconds(30)) async throws -> Int32 {
        guard await eventually(within: timeout, { !child.isRunning }) else { throw LaunchError("\(name) still running after \(timeout)") }
        // Its last output may still be in the pipe: wait (briefly; a grandchild may hold the pipe) for EOF.
        await eventually(within: .seconds(1), every: .milliseconds(5)) { reader.ended }
        return child.termination?.code ?? -1
    }

    /// SIGTERM, and SIGKILL if it is still running after `grace`: for `defer`, where nothing can await.
    public func terminate(grace: Duration = .seconds(10)) {
        child.signal(SIGTERM)
        let deadline = ContinuousClock.now + grace
        while child.isRunning, ContinuousClock.now < deadline { usleep(20_000) }
        stop()
    }

    /// SIGKILL, then wait (bounded) until its reaper thread has reaped it.
    public func stop() {
        child.signal(SIGKILL)
        let deadline = ContinuousClock.now + .seconds(5)
        while child.isRunning, ContinuousClock.now < deadline { usleep(20_000) }
    }

    deinit { stop() }
}

public struct LaunchError: Error, CustomStringConvertible {
    public let description: String
    public init(_ d: String) { description = d }
}

/// A kiln-broker process on loopback with a port picked by the OS.
public final class BrokerProcess: @unchecked Sendable {
    public let process: LaunchedProcess
    public let port: Int
    public let monitorPort: Int

    /// Unless a test sets its own, the handshake deadline (5 s by default, with auth) is 60 s: a test's
    /// raw connection connects, then reads the greeting and sends `connect` from a task on a cooperative
    /// pool shared by hundreds of parallel tests, and on a loaded 2-core machine more than 5 s passed in
    /// between — the broker closed the connection and the next send failed with EPIPE (fresh-clone CI
    /// run 14, `BrokerSenderStampTests`). The deadline itself is tested with its own values.
    public init(arguments: [String] = [], port: Int = 0) async throws {
        let deadline = arguments.contains("--handshake-timeout") ? [] : ["--handshake-timeout", "60"]
        process = try await LaunchedProcess(
            BuiltProducts.path("kiln-broker"),
            ["--host", "127.0.0.1", "--port", String(port), "--monitor-port", "0"] + deadline + arguments)
        let addr = try await process.waitForLine(prefix: "kiln-broker listening on ")
        self.port = Int(addr.split(separator: ":").last!)!
        let mon = try await process.waitForLine(prefix: "kiln-broker monitor on ")
        self.monitorPort = Int(mon.split(separator: ":").last!)!
    }

    public func stop() { process.stop() }
}
