import Foundation
import KilnArchive

/// Memory, process and CPU limits for one sandbox, through whichever cgroup version the host has,
/// chosen at run time: v2 (a unified hierarchy: `memory.max`, `memory.swap.max`, `pids.max`,
/// `cpu.max`, `cgroup.kill`) on current Debian, Ubuntu and Fedora hosts; v1 (`memory` and `pids`
/// controllers) elsewhere. Every process of the build is in the group, so `killAll` reaches processes
/// that left the process group, and the limits hold for the whole tree.
public struct CgroupLimits: Sendable {
    enum Version: Sendable, Equatable {
        /// v1 directories of the memory and pids controllers.
        case v1(memory: String, pids: String)
        /// One v2 directory.
        case v2(String)
    }

    let name: String
    let version: Version

    /// The hierarchy's mount point (tests point it at a fake tree).
    public static let defaultRoot = "/sys/fs/cgroup"

    /// Creates the group(s), or returns nil when cgroups are not writable here (the caller falls back
    /// to rlimits). `cpuQuota` is CPUs (e.g. 2.0), 0 for none (v2 only; v1's cpu controller is left alone).
    public static func create(
        name: String, memoryBytes: Int64, maxProcesses: Int, cpuQuota: Double = 0,
        root: String = defaultRoot, ownCgroup: String? = nil
    ) -> CgroupLimits? {
        if FileManager.default.fileExists(atPath: root + "/cgroup.controllers") {
            return createV2(
                name: name, memoryBytes: memoryBytes, maxProcesses: maxProcesses, cpuQuota: cpuQuota, root: root,
                ownCgroup: ownCgroup ?? Self.ownV2Cgroup())
        }
        let memory = "\(root)/memory/\(name)"
        let pids = "\(root)/pids/\(name)"
        guard mkdir(memory, 0o755) == 0 || errno == EEXIST else { return nil }
        guard mkdir(pids, 0o755) == 0 || errno == EEXIST else {
            rmdir(memory)
            return nil
        }
        let ok =
            write("\(memoryBytes)", to: memory + "/memory.limit_in_bytes")
            && write("\(maxProcesses)", to: pids + "/pids.max")
        // Swap counts against the limit too where the kernel accounts it.
        _ = write("\(memoryBytes)", to: memory + "/memory.memsw.limit_in_bytes")
        guard ok else {
            rmdir(memory)
            rmdir(pids)
            return nil
        }
        return CgroupLimits(name: name, version: .v1(memory: memory, pids: pids))
    }

    /// v2: the group is made a child of the worker's own cgroup (delegated to it, as systemd's
    /// `Delegate=yes` does). A cgroup with processes cannot hand controllers to children, so the
    /// worker first moves itself into a leaf `worker` beside them.
    private static func createV2(
        name: String, memoryBytes: Int64, maxProcesses: Int, cpuQuota: Double, root: String,
        ownCgroup: String
    ) -> CgroupLimits? {
        let parent = root + (ownCgroup == "/" ? "" : ownCgroup)
        let wanted = "+memory +pids" + (cpuQuota > 0 ? " +cpu" : "")
        if !write(wanted, to: parent + "/cgroup.subtree_control") {
            // Move ourselves (every thread: cgroup.procs moves the whole process) into a leaf, then retry.
            let leaf = parent + "/kiln-worker"
            guard mkdir(leaf, 0o755) == 0 || errno == EEXIST, write("\(getpid())", to: leaf + "/cgroup.procs"),
                write(wanted, to: parent + "/cgroup.subtree_control")
            else { return nil }
        }
        let dir = parent + "/" + name
        guard mkdir(dir, 0o755) == 0 || errno == EEXIST else { return nil }
        var ok = write("\(memoryBytes)", to: dir + "/memory.max") && write("\(maxProcesses)", to: dir + "/pids.max")
        _ = write("0", to: dir + "/memory.swap.max")
        if cpuQuota > 0 {
            let period = 100_000
            ok = ok && write("\(Int(cpuQuota * Double(period))) \(period)", to: dir + "/cpu.max")
        }
        guard ok else {
            rmdir(dir)
            return nil
        }
        return CgroupLimits(name: name, version: .v2(dir))
    }

    /// This process's v2 cgroup path ("0::/path" in /proc/self/cgroup).
    public static func ownV2Cgroup() -> String {
        let text = read("/proc/self/cgroup") ?? ""
        for line in text.split(separator: "\n") where line.hasPrefix("0::") { return String(line.dropFirst(3)) }
        return "/"
    }

    /// The `cgroup.procs` files a new process must join.
    var procsFiles: [String] {
        switch version {
        case .v1(let memory, let pids): return [memory + "/cgroup.procs", pids + "/cgroup.procs"]
        case .v2(let dir): return [dir + "/cgroup.procs"]
        }
    }

    /// A shell prefix that moves itself into the group(s), then execs the command.
    public func wrap(_ command: [String]) -> [String] {
        let files = procsFiles
        let joins = files.indices.map { "echo $$ > \"$\($0 + 1)\"" }.joined(separator: " && ")
        return ["/bin/sh", "-c", "\(joins) && shift \(files.count) && exec \"$@\"", "kiln-cgroup"] + files + command
    }

    /// Did the build hit the memory limit? (v1: an OOM kill or a failed charge — with swap accounting
    /// failures are counted in memsw.failcnt; v2: `oom_kill` or `max` events.)
    public var hitMemoryLimit: Bool {
        switch version {
        case .v1(let memory, _):
            let oomKills = Self.counter("oom_kill", in: memory + "/memory.oom_control")
            let failures = ["memory.failcnt", "memory.memsw.failcnt"].compactMap { Self.read(memory + "/" + $0).flatMap(Int.init) }
            return oomKills > 0 || failures.contains { $0 > 0 }
        case .v2(let dir):
            return Self.counter("oom_kill", in: dir + "/memory.events") > 0 || Self.counter("max", in: dir + "/memory.events") > 0
        }
    }

    /// Did a fork fail because of pids.max?
    public var hitProcessLimit: Bool {
        switch version {
        case .v1(_, let pids): return Self.counter("max", in: pids + "/pids.events") > 0
        case .v2(let dir): return Self.counter("max", in: dir + "/pids.events") > 0
        }
    }

    public func killAll() {
        if case .v2(let dir) = version, Self.write("1", to: dir + "/cgroup.kill") { return }
        for file in procsFiles {
            for line in (Self.read(file) ?? "").split(separator: "\n") {
                if let pid = pid_t(line) { kill(pid, SIGKILL) }
            }
        }
    }

    /// Kills what is left and removes the group(s).
    public func remove() {
        let dirs: [String]
        switch version {
        case .v1(let memory, let pids): dirs = [pids, memory]
        case .v2(let dir): dirs = [dir]
        }
        for _ in 0..<50 {
            killAll()
            if dirs.allSatisfy({ rmdir($0) == 0 || errno == ENOENT }) { return }
            usleep(20_000)
        }
    }

    /// `key N` in a flat-keyed cgroup file.
    static func counter(_ key: String, in path: String) -> Int {
        (read(path) ?? "").split(separator: "\n").first { $0.hasPrefix(key + " ") }.flatMap { Int($0.dropFirst(key.count + 1)) } ?? 0
    }

    static func write(_ value: String, to path: String) -> Bool {
        let fd = open(path, O_WRONLY | O_CREAT | O_TRUNC | O_CLOEXEC | O_NOFOLLOW, 0o644)
        guard fd >= 0 else { return false }
        defer { close(fd) }
        let bytes = Array(value.utf8)
        return bytes.withUnsafeBytes { Glibc.write(fd, $0.baseAddress, $0.count) } == bytes.count
    }

    public static func read(_ path: String) -> String? {
        KernelFile.read(path).map { String(decoding: $0, as: UTF8.self).trimmingCharacters(in: .whitespacesAndNewlines) }
    }
}
