import Foundation

/// The build's writable workspace (`src/` and `out/`), on a file system of its own sized to the
/// job's disk limit: a tmpfs mounted `nosuid,nodev` when the worker may mount (root), so a build that
/// writes too much fills its own workspace and fails, never the host's disk. In a confidential VM
/// this is also where the data belongs: memory the hypervisor cannot read, not a host-backed disk.
/// Where mounting is not possible the workspace is a plain directory and the job says so in its log.
struct Workspace: Sendable {
    let path: String
    /// Whether a size-limited file system is mounted at `path`.
    let isMounted: Bool
    let limitBytes: Int64

    static func create(at path: String, diskLimitBytes: Int64, note: (String) -> Void) throws -> Workspace {
        try FileManager.default.createDirectory(atPath: path, withIntermediateDirectories: true, attributes: [.posixPermissions: 0o711])
        guard geteuid() == 0, diskLimitBytes > 0 else {
            note("no disk limit: the worker cannot mount a size-limited workspace (not root)")
            return Workspace(path: path, isMounted: false, limitBytes: 0)
        }
        let options = "size=\(diskLimitBytes),mode=0711,nr_inodes=\(max(65_536, diskLimitBytes / 8192))"
        guard mount("kiln-workspace", path, "tmpfs", UInt(MS_NOSUID | MS_NODEV), options) == 0 else {
            note("no disk limit: mounting the workspace failed (\(String(cString: strerror(errno))))")
            return Workspace(path: path, isMounted: false, limitBytes: 0)
        }
        return Workspace(path: path, isMounted: true, limitBytes: diskLimitBytes)
    }

    /// Less than 1 MiB (or 1 %) left, or no inodes: the build most likely failed because it was full.
    var isFull: Bool {
        guard isMounted else { return false }
        var st = statvfs()
        guard statvfs(path, &st) == 0 else { return false }
        let free = Int64(st.f_bavail) * Int64(st.f_frsize)
        return free < max(1 << 20, limitBytes / 100) || st.f_favail == 0
    }

    /// Unmounts (lazily, so a straggler holding a file cannot keep it) and deletes the directory.
    func remove() {
        if isMounted { _ = umount2(path, Int32(MNT_DETACH)) }
        // Best effort after unmounting; the pool's leftover sweep removes what stays.
        try? FileManager.default.removeItem(atPath: path)
    }
}
