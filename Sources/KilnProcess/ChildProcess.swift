import CKilnSystem
import Foundation
import NIOConcurrencyHelpers

/// A long-lived child process (a worker under the pool, a daemon under a test), spawned so that it
/// inherits nothing but the three descriptors it is given, and reaped by a thread of its own.
///
/// Why not Foundation's `Process`: on Linux it learns of a child's exit through a socket the child
/// inherits, and a process another thread spawns at the same moment can inherit that socket too (the
/// descriptor is not close-on-exec), so the exit goes unnoticed for as long as the other process lives
/// (swift-corelibs-foundation#4795). Under a parallel test run that stalled `waitUntilExit` for
/// minutes. Here `kiln_spawn` closes every descriptor above 2 in the child, and a blocking `waitid` on
/// a dedicated thread reports the exit: no cooperative thread ever waits for a process.
public final class ChildProcess: Sendable {
    public enum Termination: Sendable, Equatable, CustomStringConvertible {
        case exited(Int32)
        case signalled(Int32)

        /// The exit code, or the number of the signal that ended it.
        public var code: Int32 {
            switch self {
            case .exited(let c): c
            case .signalled(let s): s
            }
        }

        public var description: String {
            switch self {
            case .exited(let c): "exit code \(c)"
            case .signalled(let s): "killed by signal \(s)"
            }
        }
    }

    public struct SpawnError: Error, CustomStringConvertible {
        public let executable: String
        public let errno: Int32
        public init(executable: String, errno: Int32) {
            self.executable = executable
            self.errno = errno
        }
        public var description: String { "cannot start \(executable): \(String(cString: strerror(errno)))" }
    }

    private struct State {
        var termination: Termination?
        var waiters: [CheckedContinuation<Termination, Never>] = []
    }

    public let pid: pid_t
    private let state = NIOLockedValueBox(State())

    /// Starts `executable` (an absolute path). `stdin`, `stdout` and `stderr` are descriptors the child
    /// gets as 0, 1 and 2 (-1 for /dev/null); the caller keeps its own copies and closes them.
    /// `onExit` runs on the reaper thread once the process has been reaped.
    public init(
        executable: String, arguments: [String], environment: [String: String]? = nil,
        workingDirectory: String? = nil, stdin: Int32 = -1, stdout: Int32 = -1, stderr: Int32 = -1,
        onExit: (@Sendable (pid_t, Termination) -> Void)? = nil
    ) throws {
        let argv = ([executable] + arguments).map { strdup($0) } + [nil]
        let env = (environment ?? ProcessInfo.processInfo.environment).map { strdup("\($0.key)=\($0.value)") } + [nil]
        defer {
            for p in argv { free(p) }
            for p in env { free(p) }
        }
        var spawned: pid_t = 0
        let rc = argv.withUnsafeBufferPointer { argvPointer in
            env.withUnsafeBufferPointer { envPointer in
                if let workingDirectory {
                    return kiln_spawn(&spawned, executable, argvPointer.baseAddress, envPointer.baseAddress, workingDirectory, stdin, stdout, stderr)
                }
                return kiln_spawn(&spawned, executable, argvPointer.baseAddress, envPointer.baseAddress, nil, stdin, stdout, stderr)
            }
        }
        guard rc == 0 else { throw SpawnError(executable: executable, errno: rc) }
        let pid = spawned
        self.pid = pid
        let state = self.state
        let reaper = Thread {
            // Wait without reaping, then reap under the lock `signal` takes: a signal can never reach a
            // process that has been reaped and whose pid the kernel may already have given to another.
            var info = siginfo_t()
            while waitid(P_PID, id_t(pid), &info, WEXITED | WNOWAIT) != 0 && errno == EINTR {}
            let (termination, waiters) = state.withLockedValue { s in
                var status: Int32 = 0
                while waitpid(pid, &status, 0) < 0 && errno == EINTR {}
                let t: Termination = (status & 0x7f) == 0 ? .exited((status >> 8) & 0xff) : .signalled(status & 0x7f)
                s.termination = t
                defer { s.waiters = [] }
                return (t, s.waiters)
            }
            for w in waiters { w.resume(returning: termination) }
            onExit?(pid, termination)
        }
        reaper.name = "reaper of \(pid)"
        reaper.start()
    }

    /// How it ended, or nil while it runs.
    public var termination: Termination? { state.withLockedValue { $0.termination } }
    public var isRunning: Bool { termination == nil }

    /// Sends `signal` to the process (or its whole process group) unless it has already been reaped.
    public func signal(_ signal: Int32, toProcessGroup: Bool = false) {
        state.withLockedValue { s in
            if s.termination == nil { _ = kill(toProcessGroup ? -pid : pid, signal) }
        }
    }

    /// Waits for it to end.
    @discardableResult
    public func wait() async -> Termination {
        await withCheckedContinuation { (c: CheckedContinuation<Termination, Never>) in
            let done = state.withLockedValue { s -> Termination? in
                if let t = s.termination { return t }
                s.waiters.append(c)
                return nil
            }
            if let done { c.resume(returning: done) }
        }
    }
}
