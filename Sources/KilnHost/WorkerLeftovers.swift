import Foundation

/// What a worker leaves on the host if it dies without cleaning up (SIGKILL, a crash, an OOM kill):
/// its sandbox cgroups (named `kiln-<job>-<worker pid>`) with any processes still in them, its
/// size-limited workspace mount, and its scratch directory. The pool calls `clean` for every worker
/// that exits, whatever the reason; for one that exited cleanly there is simply nothing to find.
public enum WorkerLeftovers {
    /// Kills and removes the worker's cgroups, unmounts everything mounted beneath `scratch`, and
    /// deletes `scratch`. Returns a line per thing it had to clean (empty when the worker had).
    public static func clean(workerPID: pid_t, scratch: String, cgroupRoot: String = CgroupLimits.defaultRoot) -> [String] {
        var done: [String] = []
        for dir in cgroups(of: workerPID, root: cgroupRoot) {
            // One directory at a time: `remove` kills what is listed in its cgroup.procs (v2 first
            // tries cgroup.kill, which a v1 directory lacks) and rmdirs it — right for either version.
            let group = CgroupLimits(name: (dir as NSString).lastPathComponent, version: .v2(dir))
            let procs = (CgroupLimits.read(dir + "/cgroup.procs") ?? "").split(separator: "\n").count
            group.remove()
            done.append("removed cgroup \(dir)" + (procs > 0 ? " and killed its \(procs) process(es)" : ""))
        }
        for mountPoint in mounts(beneath: scratch).sorted(by: { $0.count > $1.count }) {
            if umount2(mountPoint, Int32(MNT_DETACH)) == 0 { done.append("unmounted \(mountPoint)") }
        }
        if FileManager.default.fileExists(atPath: scratch) {
            // Best effort on a dead worker's scratch: the line below reports it either way, and the next exit sweeps again.
            try? FileManager.default.removeItem(atPath: scratch)
            done.append("deleted scratch directory \(scratch)")
        }
        return done
    }

    /// The sandbox cgroups a worker created: v1 `memory/` and `pids/` children, or v2 groups up to
    /// two levels below this process's own cgroup, named `kiln-…-<pid>`.
    static func cgroups(of pid: pid_t, root: String) -> [String] {
        let suffix = "-\(pid)"
        func matching(in dir: String, depth: Int) -> [String] {
            let names = (try? FileManager.default.contentsOfDirectory(atPath: dir)) ?? []
            var out: [String] = []
            for name in names {
                let path = dir + "/" + name
                var st = stat()
                guard lstat(path, &st) == 0, (st.st_mode & S_IFMT) == S_IFDIR else { continue }
                if name.hasPrefix("kiln-") && name.hasSuffix(suffix) { out.append(path) } else if depth > 0 { out += matching(in: path, depth: depth - 1) }
            }
            return out
        }
        if FileManager.default.fileExists(atPath: root + "/cgroup.controllers") {
            let own = CgroupLimits.ownV2Cgroup()
            return matching(in: root + (own == "/" ? "" : own), depth: 1)
        }
        return ["memory", "pids"].flatMap { matching(in: root + "/" + $0, depth: 0) }
    }

    /// Mount points at or beneath `directory`, from /proc/self/mountinfo (octal escapes decoded).
    static func mounts(beneath directory: String) -> [String] {
        guard let text = CgroupLimits.read("/proc/self/mountinfo") else { return [] }
        return text.split(separator: "\n").compactMap { line -> String? in
            let fields = line.split(separator: " ")
            guard fields.count > 4 else { return nil }
            let point = decodeOctal(String(fields[4]))
            return point == directory || point.hasPrefix(directory + "/") ? point : nil
        }
    }

    static func decodeOctal(_ s: String) -> String {
        var bytes: [UInt8] = []
        var u = Array(s.utf8)[...]
        while let b = u.first {
            if b == UInt8(ascii: "\\"), u.count >= 4, let v = UInt8(String(decoding: u.dropFirst().prefix(3), as: UTF8.self), radix: 8) {
                bytes.append(v)
                u = u.dropFirst(4)
            } else {
                bytes.append(b)
                u = u.dropFirst()
            }
        }
        return String(decoding: bytes, as: UTF8.self)
    }
}
