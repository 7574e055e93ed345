import Foundation
import NIOConcurrencyHelpers

/// Notices when Swift's cooperative thread pool stops running tasks, and says who is holding it.
///
/// On a 2-core machine the pool has two threads: one test (or code under test) that blocks its thread
/// in a synchronous wait halves the whole process, two stop every other test at once, and timeouts
/// measured by the stalled tests then fail far from the cause (issue #27). This watchdog runs on a
/// thread of its own, outside the pool: every 250 ms it schedules a tiny task; when none has run for
/// `KILN_STALL_SECONDS` (default 5 s) it prints a line naming the stall and, where gdb is installed, the
/// backtraces of every thread to a file, so the blocking frame is named in the test log. It only
/// observes: it never fails a test by itself.
public enum StallWatchdog {
    private static let state = NIOLockedValueBox(State())

    private struct State {
        var started = false
        var lastBeat = ContinuousClock.now
        var pending = false
        var reported = false
    }

    /// Starts the watchdog once per process (every helper that tests share calls this).
    public static func start() {
        let first = state.withLockedValue { s -> Bool in
            defer { s.started = true }
            return !s.started
        }
        guard first else { return }
        let limit = Double(ProcessInfo.processInfo.environment["KILN_STALL_SECONDS"] ?? "") ?? 5
        let thread = Thread { watch(limit: .milliseconds(Int(limit * 1000))) }
        thread.name = "kiln-stall-watchdog"
        thread.start()
    }

    private static func watch(limit: Duration) {
        while true {
            usleep(250_000)  // a thread of its own: sleeping here blocks nothing else
            let now = ContinuousClock.now
            let (schedule, stalledFor) = state.withLockedValue { s -> (Bool, Duration?) in
                let schedule = !s.pending
                if schedule { s.pending = true }
                let stalled = s.pending && now - s.lastBeat > limit && !s.reported
                if stalled { s.reported = true }
                return (schedule, stalled ? now - s.lastBeat : nil)
            }
            if schedule {
                Task.detached {
                    let beat = ContinuousClock.now
                    let (wasReported, since) = state.withLockedValue { s -> (Bool, Duration) in
                        defer {
                            s.pending = false
                            s.lastBeat = beat
                            s.reported = false
                        }
                        return (s.reported, beat - s.lastBeat)
                    }
                    if wasReported { say("the cooperative pool ran again after \(since)") }
                }
            }
            if let stalledFor { report(stalledFor) }
        }
    }

    /// Standard error, unbuffered: the line must be in the log even if the process dies next.
    private static func say(_ line: String) {
        FileHandle.standardError.write(Data(("kiln-stall-watchdog: " + line + "\n").utf8))
    }

    /// Prints the stall and writes every thread's backtrace (gdb, if present) beside the temporary files.
    private static func report(_ stalledFor: Duration) {
        let file = FileManager.default.temporaryDirectory.path + "/kiln-stall-\(getpid())-\(Int(Date().timeIntervalSince1970)).txt"
        say("no task has run on the cooperative pool for \(stalledFor); thread backtraces → \(file)")
        guard FileManager.default.isExecutableFile(atPath: "/usr/bin/gdb") else { return }
        let gdb = Process()
        gdb.executableURL = URL(fileURLWithPath: "/usr/bin/gdb")
        gdb.arguments = ["-batch", "-nx", "-p", String(getpid()), "-ex", "thread apply all bt 25"]
        // This runs on the watchdog's own thread, never on the pool: waiting here is what it is for.
        guard FileManager.default.createFile(atPath: file, contents: nil), let out = FileHandle(forWritingAtPath: file) else { return }
        gdb.standardOutput = out
        gdb.standardError = out
        do {
            try gdb.run()
            gdb.waitUntilExit()
        } catch {
            say("cannot run gdb: \(error)")
        }
        try? out.close()  // the report is written; a close error loses nothing
    }
}
