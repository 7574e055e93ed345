import Foundation
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

/// A child process started by a test, with its output captured line by line. Killed on `stop()` or deinit.
public final class LaunchedProcess: @unchecked Sendable {
    public let process = Process()
    private let lines = NIOLockedValueBox<(lines: [String], partial: Data, ended: Bool)>(([], Data(), false))
    private let outPipe = Pipe()
    public let name: String

    public init(_ executable: String, _ arguments: [String], environment: [String: String]? = nil) throws {
        name = (executable as NSString).lastPathComponent
        process.executableURL = URL(fileURLWithPath: executable)
        process.arguments = arguments
        if let environment { process.environment = environment }
        process.standardOutput = outPipe
        process.standardError = outPipe
        try process.run()
        // A plain blocking read loop on its own thread, not `readabilityHandler`: tearing down the
        // dispatch read source that handler installs races the descriptor's close inside libdispatch
        // (swift-corelibs-libdispatch#949) and crashed the whole test process in CI. The thread reads a
        // private dup of the pipe, so releasing the Pipe never closes a descriptor under it.
        let descriptor = fcntl(outPipe.fileHandleForReading.fileDescriptor, F_DUPFD_CLOEXEC, 0)
        guard descriptor >= 0 else { throw LaunchError("dup failed for \(name)'s output pipe") }
        let lines = self.lines
        let reader = Thread {
            var buffer = [UInt8](repeating: 0, count: 65536)
            while true {
                let n = buffer.withUnsafeMutableBytes { read(descriptor, $0.baseAddress, $0.count) }
                if n < 0 && errno == EINTR { continue }
                guard n > 0 else { break }
                lines.withLockedValue { state in
                    state.partial.append(contentsOf: buffer[0..<n])
                    while let nl = state.partial.firstIndex(of: 0x0A) {
                        state.lines.append(String(decoding: state.partial[state.partial.startIndex..<nl], as: UTF8.self))
                        state.partial.removeSubrange(state.partial.startIndex...nl)
                    }
                }
            }
            close(descriptor)
            lines.withLockedValue { state in
                if !state.partial.isEmpty { state.lines.append(String(decoding: state.partial, as: UTF8.self)) }
                state.partial = Data()
                state.ended = true
            }
        }
        reader.name = "output of \(name)"
        reader.start()
    }

    public var output: [String] { lines.withLockedValue { $0.lines } }
    public var pid: Int32 { process.processIdentifier }
    public var isRunning: Bool { process.isRunning }

    /// Waits for an output line with `prefix` and returns the rest of it.
    public func waitForLine(prefix: String, timeout: Duration = .seconds(30)) async throws -> String {
        let deadline = ContinuousClock.now + timeout
        while ContinuousClock.now < deadline {
            if let line = output.first(where: { $0.hasPrefix(prefix) }) { return String(line.dropFirst(prefix.count)) }
            if !process.isRunning {
                throw LaunchError("\(name) exited (\(process.terminationStatus)) before printing '\(prefix)': \(output.suffix(20).joined(separator: "\n"))")
            }
            try await Task.sleep(for: .milliseconds(20))
        }
        throw LaunchError("\(name) did not print '\(prefix)' within \(timeout): \(output.suffix(20).joined(separator: "\n"))")
    }

    public func signal(_ sig: Int32) { if process.isRunning { kill(process.processIdentifier, sig) } }

    /// Waits for the process to exit and returns its status.
    @discardableResult
    public func waitForExit(timeout: Duration = .seconds(30)) async throws -> Int32 {
        let deadline = ContinuousClock.now + timeout
        while process.isRunning {
            if ContinuousClock.now > deadline { throw LaunchError("\(name) still running after \(timeout)") }
            try await Task.sleep(for: .milliseconds(20))
        }
        // Its last output may still be in the pipe: wait (briefly; a grandchild may hold the pipe) for EOF.
        let drained = ContinuousClock.now + .seconds(1)
        while !lines.withLockedValue({ $0.ended }), ContinuousClock.now < drained { try await Task.sleep(for: .milliseconds(5)) }
        return process.terminationStatus
    }

    /// SIGKILL, then wait (bounded) until Foundation has reaped it.
    public func stop() {
        guard process.isRunning else { return }
        kill(process.processIdentifier, SIGKILL)
        for _ in 0..<250 where process.isRunning { usleep(20_000) }
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

    public init(arguments: [String] = [], port: Int = 0) async throws {
        process = try LaunchedProcess(BuiltProducts.path("kiln-broker"),
                                      ["--host", "127.0.0.1", "--port", String(port), "--monitor-port", "0"] + arguments)
        let addr = try await process.waitForLine(prefix: "kiln-broker listening on ")
        self.port = Int(addr.split(separator: ":").last!)!
        let mon = try await process.waitForLine(prefix: "kiln-broker monitor on ")
        self.monitorPort = Int(mon.split(separator: ":").last!)!
    }

    public func stop() { process.stop() }
}
