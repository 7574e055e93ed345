import Foundation

/// Shows a followed job. Piped output gets plain lines (elapsed time, phases, every log line, the
/// outcome), for logs and scripts. A terminal gets a progress display: one line per finished phase with
/// its duration, and a status line redrawn in place with the current phase, the elapsed time and the
/// latest log line; on failure the log's tail is printed.
struct EventPrinter {
    let client: GatewayClient
    var tty = isatty(1) == 1

    func follow(_ id: String) async throws -> String {
        var display = ProgressDisplay(tty: tty, start: Date())
        try await client.follow(id) { type, e in display.show(type, e) }
        display.finish()
        return display.terminal
    }
}

/// The display's state; `show` prints what one event changes.
struct ProgressDisplay {
    let tty: Bool
    let start: Date
    var terminal = "?"
    private var phase: String?
    private var phaseStarted: Date?
    private var tail: [String] = []
    private var statusLineShown = false

    init(tty: Bool, start: Date) {
        self.tty = tty
        self.start = start
    }

    private func elapsed(_ now: Date = Date()) -> String { String(format: "%6.1fs", now.timeIntervalSince(start)) }

    mutating func show(_ type: String, _ e: [String: Any]) {
        let t = "[\(elapsed())]"
        switch type {
        case "phase":
            let name = e["name"] as? String ?? ""
            if tty {
                endPhase()
                phase = name
                phaseStarted = Date()
                redraw()
            } else {
                print("\(t) phase \(name)")
            }
        case "log":
            let lines = e["lines"] as? [String] ?? []
            tail = Array((tail + lines).suffix(15))
            if tty { redraw() } else { for line in lines { print("\(t)   \(line)") } }
        case "artifact":
            clearStatus()
            print("\(t) artifact \(e["path"] as? String ?? "") sha256 \(e["sha256"] as? String ?? "")")
            redraw()
        case "heartbeat": if tty { redraw() }
        case "done":
            terminal = "done"
            endPhase()
            var line = "\(t) done: result sha256 \(e["sha256"] as? String ?? "") (\(e["size"] as? Int ?? 0) bytes)"
            if let reproducible = e["reproducible"] as? Bool {
                line +=
                    reproducible
                    ? "; rebuild REPRODUCED the original" : "; rebuild did NOT reproduce: " + ((e["differing_artifacts"] as? [String]) ?? []).joined(separator: ", ")
            }
            print(line)
        case "failed":
            terminal = "failed"
            endPhase(failed: true)
            if tty, !tail.isEmpty {
                print("last log lines:")
                for line in tail { print("  \(line)") }
            }
            print("\(t) FAILED in \(e["failure_phase"] as? String ?? "?"): \(e["message"] as? String ?? "")")
            if let s = e["suggested_action"] as? String { print("\(t)   suggestion: \(s)") }
        case "cancelled":
            terminal = "cancelled"
            endPhase(failed: true)
            print("\(t) cancelled")
        default:
            clearStatus()
            print("\(t) \(type)")
            redraw()
        }
    }

    mutating func finish() { clearStatus() }

    /// The finished phase gets its permanent line.
    private mutating func endPhase(failed: Bool = false) {
        guard tty else { return }
        clearStatus()
        if let phase, let phaseStarted {
            print("\(failed ? "✘" : "✔") \(phase.padding(toLength: 8, withPad: " ", startingAt: 0)) \(String(format: "%5.1fs", Date().timeIntervalSince(phaseStarted)))")
        }
        phase = nil
        phaseStarted = nil
    }

    private mutating func redraw() {
        guard tty, let phase else { return }
        var columns = winsize()
        let width = ioctl(1, UInt(TIOCGWINSZ), &columns) == 0 && columns.ws_col > 20 ? Int(columns.ws_col) : 80
        var line = "\u{1B}[1m▶ \(phase)\u{1B}[0m \(elapsed())"
        if let last = tail.last {
            let room = width - phase.count - 14
            if room > 10 { line += " │ " + String(last.replacingOccurrences(of: "\t", with: " ").prefix(room)) }
        }
        FileHandle.standardOutput.write(Data(("\r\u{1B}[K" + line).utf8))
        statusLineShown = true
    }

    private mutating func clearStatus() {
        guard tty, statusLineShown else { return }
        FileHandle.standardOutput.write(Data("\r\u{1B}[K".utf8))
        statusLineShown = false
    }
}
