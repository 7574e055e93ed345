import CKilnSystem
import Foundation

/// The sandbox's seccomp program (classic BPF, built by `kiln_build_seccomp_filter`): mounts, new
/// namespaces, keyrings, eBPF, ptrace and process_vm_*, perf, userfaultfd, module loading, kexec,
/// swap, reboot, open_by_handle_at fail with EPERM; io_uring with ENOSYS (runtimes then fall back to
/// ordinary I/O); a foreign architecture (x32, i386 entry points) is killed. bwrap installs it last,
/// just before exec'ing the build, so bwrap's own set-up is unaffected.
enum SeccompFilter {
    /// The program's bytes.
    static func program() throws -> [UInt8] {
        var buffer = [UInt8](repeating: 0, count: 4096)
        let n = buffer.withUnsafeMutableBytes { kiln_build_seccomp_filter($0.baseAddress!.assumingMemoryBound(to: UInt8.self), $0.count) }
        guard n > 0 else { throw BuildFailure.internalError("build", "cannot build the sandbox's seccomp filter (errno \(errno))") }
        return Array(buffer[0..<Int(n)])
    }

    /// A file holding the program in `directory` (the worker's private scratch, never a shared
    /// directory like /tmp where someone else could plant a link at the name). bwrap reads it from a
    /// descriptor the launch chain opens.
    static func file(in directory: String) throws -> String {
        let path = directory + "/seccomp.bpf"
        if FileManager.default.fileExists(atPath: path) { return path }
        let bytes = try program()
        let tmp = path + ".\(UUID().uuidString)"
        guard FileManager.default.createFile(atPath: tmp, contents: Data(bytes), attributes: [.posixPermissions: 0o600]),
            rename(tmp, path) == 0
        else {
            throw BuildFailure.internalError("build", "cannot write the sandbox's seccomp filter")
        }
        return path
    }
}
