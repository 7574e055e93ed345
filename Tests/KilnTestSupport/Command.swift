import Foundation
import KilnProcess
import NIOConcurrencyHelpers

/// Runs a short helper command (git, openssl, tar) to completion and returns its standard output.
/// Asynchronous on purpose: a test that blocks its thread in `waitUntilExit` holds one of the
/// cooperative pool's few threads, and enough of them stall every other test in the process.
public enum Command {
    @discardableResult
    public static func run(
        _ executable: String, _ arguments: [String], environment: [String: String]? = nil,
        workingDirectory: String? = nil
    ) async throws -> String {
        let out = try PipeReader.pipe()
        let err: (read: Int32, write: Int32)
        do { err = try PipeReader.pipe() } catch {
            close(out.read)
            close(out.write)
            throw error
        }
        let child: ChildProcess
        do {
            defer {
                close(out.write)
                close(err.write)
            }
            child = try ChildProcess(
                executable: executable, arguments: arguments, environment: environment,
                workingDirectory: workingDirectory, stdout: out.write, stderr: err.write)
        } catch {
            close(out.read)
            close(err.read)
            throw error
        }
        let stdout = NIOLockedValueBox<[String]>([])
        let stderr = NIOLockedValueBox<[String]>([])
        let outReader = PipeReader(descriptor: out.read, name: "stdout of \(executable)") { line in stdout.withLockedValue { $0.append(line) } }
        let errReader = PipeReader(descriptor: err.read, name: "stderr of \(executable)") { line in stderr.withLockedValue { $0.append(line) } }
        let termination = await child.wait()
        await outReader.waitForEnd()
        await errReader.waitForEnd()
        guard termination == .exited(0) else {
            let name = executable.split(separator: "/").last.map(String.init) ?? executable
            let message = stderr.withLockedValue { $0.suffix(20).joined(separator: "\n") }
            throw LaunchError("\(name) \(arguments.prefix(3).joined(separator: " ")) failed (\(termination)): \(message)")
        }
        return stdout.withLockedValue { $0.joined(separator: "\n") }
    }
}
