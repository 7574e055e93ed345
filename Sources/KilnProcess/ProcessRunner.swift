import Foundation
import NIOConcurrencyHelpers
import Subprocess
import SystemPackage

/// Runs a child process in its own process group with a wall-clock limit and a cancel switch, handing
/// output to the caller line by line (long lines cut, never an error). On timeout or cancel the whole
/// group gets SIGTERM, then SIGKILL after `grace`.
public enum ProcessRunner {
    public enum Stream: String, Sendable { case stdout, stderr }

    public struct Outcome: Sendable {
        public var exitCode: Int32?
        public var signal: Int32?
        public var timedOut: Bool
        public var cancelled: Bool
        public var succeeded: Bool { exitCode == 0 && !timedOut && !cancelled }
        public var description: String {
            if timedOut { return "timed out" }
            if cancelled { return "cancelled" }
            if let exitCode { return "exit code \(exitCode)" }
            return "killed by signal \(signal ?? 0)"
        }
    }

    public static func run(
        _ executable: String, _ arguments: [String], environment: [String: String]? = nil,
        workingDirectory: String? = nil, timeout: Duration, cancel: CancelSwitch? = nil,
        grace: Duration = .seconds(1), maxLineBytes: Int = 4096,
        afterExit: (@Sendable () -> Void)? = nil,
        onLine: @escaping @Sendable (Stream, String) -> Void
    ) async throws -> Outcome {
        var options = PlatformOptions()
        options.processGroupID = 0
        let env: Subprocess.Environment =
            environment.map { .custom(Dictionary(uniqueKeysWithValues: $0.map { (Subprocess.Environment.Key(stringLiteral: $0.key), $0.value) })) } ?? .inherit
        let timedOut = Flag()
        let cancelled = Flag()
        let teardown: [TeardownStep] = [.gracefulShutDown(toProcessGroup: true, allowedDurationToNextStep: grace)]
        let result = try await Subprocess.run(
            .path(FilePath(executable)), arguments: Arguments(arguments), environment: env,
            workingDirectory: workingDirectory.map { FilePath($0) }, platformOptions: options,
            input: .none, output: .sequence, error: .sequence
        ) { execution in
            try await withThrowingTaskGroup(of: Void.self) { group in
                group.addTask {
                    var splitter = LineSplitter(maxLineBytes: maxLineBytes)
                    for try await chunk in execution.standardOutput {
                        chunk.withUnsafeBytes { splitter.feed($0) { onLine(.stdout, $0) } }
                    }
                    splitter.finish { onLine(.stdout, $0) }
                }
                group.addTask {
                    var splitter = LineSplitter(maxLineBytes: maxLineBytes)
                    for try await chunk in execution.standardError {
                        chunk.withUnsafeBytes { splitter.feed($0) { onLine(.stderr, $0) } }
                    }
                    splitter.finish { onLine(.stderr, $0) }
                }
                // Watchdog: timeout or cancel → tear the whole group down.
                let watchdog = Task {
                    let reason = await withTaskGroup(of: Int.self) { w in
                        w.addTask { (try? await Task.sleep(for: timeout)) != nil ? 1 : 0 }
                        if let cancel {
                            w.addTask {
                                await cancel.wait()
                                return cancel.isFired ? 2 : 0
                            }
                        }
                        let first = await w.next() ?? 0
                        w.cancelAll()
                        return first
                    }
                    if reason == 1 { timedOut.set() }
                    if reason == 2 { cancelled.set() }
                    if reason != 0 { await execution.teardown(using: teardown) }
                }
                defer { watchdog.cancel() }
                // Descendants can keep our pipes open after the child itself is gone; `afterExit` lets the
                // caller sweep them (the sandbox kills its cgroup) so the streams end.
                let reaper = afterExit.map { sweep in
                    Task {
                        let pid = execution.processIdentifier.value
                        while !Task.isCancelled {
                            try? await Task.sleep(for: .milliseconds(100))
                            if !Self.isAlive(pid) {
                                sweep()
                                return
                            }
                        }
                    }
                }
                defer { reaper?.cancel() }
                try await group.waitForAll()
                watchdog.cancel()
            }
        }
        var outcome = Outcome(exitCode: nil, signal: nil, timedOut: timedOut.isSet, cancelled: cancelled.isSet)
        switch result.terminationStatus {
        case .exited(let code): outcome.exitCode = code
        case .signaled(let sig): outcome.signal = sig
        }
        return outcome
    }

    /// Is our child `pid` still running (not exited, not reaped)? Asks the kernel directly (`WNOWAIT`
    /// leaves the exit status for Subprocess to collect), so it answers even when every task is busy.
    public static func isAlive(_ pid: pid_t) -> Bool {
        var info = siginfo_t()
        let rc = waitid(P_PID, id_t(pid), &info, WEXITED | WNOHANG | WNOWAIT)
        if rc != 0 { return false }  // ECHILD: already reaped (or not ours)
        return info._sifields._sigchld.si_pid == 0
    }

    /// Runs a short command and collects its output (git plumbing).
    public static func capture(
        _ executable: String, _ arguments: [String], environment: [String: String]? = nil,
        workingDirectory: String? = nil, timeout: Duration = .seconds(60),
        cancel: CancelSwitch? = nil
    ) async throws -> (outcome: Outcome, stdout: String, stderr: String) {
        let out = NIOLockedValueBox<[String]>([])
        let err = NIOLockedValueBox<[String]>([])
        let outcome = try await run(
            executable, arguments, environment: environment, workingDirectory: workingDirectory,
            timeout: timeout, cancel: cancel, maxLineBytes: 1 << 20
        ) { stream, line in
            if stream == .stdout { out.withLockedValue { $0.append(line) } } else { err.withLockedValue { $0.append(line) } }
        }
        return (outcome, out.withLockedValue { $0.joined(separator: "\n") }, err.withLockedValue { $0.joined(separator: "\n") })
    }
}
