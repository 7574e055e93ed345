import Foundation

/// Memory and process limits for one sandbox through cgroup v1 (`memory`, `pids` controllers), the
/// kind this machine has. Every process of the build is in the group, so `killAll` reaches processes
/// that escaped the process group, and the limits hold for the whole tree.
struct CgroupLimits: Sendable {
    static let root = "/sys/fs/cgroup"
    let name: String
    let memoryDir: String
    let pidsDir: String

    /// Creates the groups, or returns nil when cgroups are not writable here (the caller falls back to rlimits).
    static func create(name: String, memoryBytes: Int64, maxProcesses: Int) -> CgroupLimits? {
        let memory = "\(root)/memory/\(name)"
        let pids = "\(root)/pids/\(name)"
        guard mkdir(memory, 0o755) == 0 || errno == EEXIST else { return nil }
        guard mkdir(pids, 0o755) == 0 || errno == EEXIST else { rmdir(memory); return nil }
        let ok = write("\(memoryBytes)", to: memory + "/memory.limit_in_bytes")
            && write("\(maxProcesses)", to: pids + "/pids.max")
        // Swap counts against the limit too where the kernel accounts it.
        _ = write("\(memoryBytes)", to: memory + "/memory.memsw.limit_in_bytes")
        guard ok else { rmdir(memory); rmdir(pids); return nil }
        return CgroupLimits(name: name, memoryDir: memory, pidsDir: pids)
    }

    /// A shell prefix that moves itself into both groups, then execs the command.
    func wrap(_ command: [String]) -> [String] {
        ["/bin/sh", "-c", "echo $$ > \"$1\" && echo $$ > \"$2\" && shift 2 && exec \"$@\"", "kiln-cgroup",
         memoryDir + "/cgroup.procs", pidsDir + "/cgroup.procs"] + command
    }

    /// Did the build hit the memory limit? (An OOM kill in the group, or a failed charge — with swap
    /// accounting the failures are counted in memsw.failcnt, not failcnt.)
    var hitMemoryLimit: Bool {
        let oomKills = (Self.read(memoryDir + "/memory.oom_control") ?? "").split(separator: "\n")
            .first { $0.hasPrefix("oom_kill ") }.flatMap { Int($0.dropFirst("oom_kill ".count)) } ?? 0
        let failures = ["memory.failcnt", "memory.memsw.failcnt"].compactMap { Self.read(memoryDir + "/" + $0).flatMap(Int.init) }
        return oomKills > 0 || failures.contains { $0 > 0 }
    }

    /// Did a fork fail because of pids.max?
    var hitProcessLimit: Bool {
        guard let events = Self.read(pidsDir + "/pids.events") else { return false }
        return events.split(separator: "\n").contains { $0.hasPrefix("max ") && $0 != "max 0" }
    }

    func killAll() {
        for dir in [pidsDir, memoryDir] {
            for line in (Self.read(dir + "/cgroup.procs") ?? "").split(separator: "\n") {
                if let pid = pid_t(line) { kill(pid, SIGKILL) }
            }
        }
    }

    /// Kills what is left and removes the groups.
    func remove() {
        for _ in 0..<50 {
            killAll()
            if rmdir(pidsDir) == 0 || errno == ENOENT, rmdir(memoryDir) == 0 || errno == ENOENT { return }
            usleep(20_000)
        }
    }

    private static func write(_ value: String, to path: String) -> Bool {
        guard let fh = FileHandle(forWritingAtPath: path) else { return false }
        defer { try? fh.close() }
        return (try? fh.write(contentsOf: Data(value.utf8))) != nil
    }

    static func read(_ path: String) -> String? {
        FileManager.default.contents(atPath: path).map { String(decoding: $0, as: UTF8.self).trimmingCharacters(in: .whitespacesAndNewlines) }
    }
}
