import Foundation
import KilnArchive
import NIOPosix

/// Puts a result tarball together from the chunks a worker uploads: each chunk written durably at its
/// offset in `partial/<job>.part`, then the whole file checked against the announced digest and size
/// and moved to `results/<sha256>.tar.gz`. All of it is blocking disk work (`pwrite` + `fsync`,
/// hashing hundreds of MiB), so it runs on NIO's blocking thread pool, never on the coordinator's
/// actor: events and dispatches do not wait behind a result upload. Failures are storage failures
/// (`ResultStorageError`), not HTTP errors; the coordinator decides what the worker is told.
struct ResultAssembler: Sendable {
    let files: ResultFiles
    var threadPool: NIOThreadPool = .singleton

    /// Writes one chunk durably at `offset` (chunks may come in any order, and twice).
    func write(job: String, offset: Int64, bytes: [UInt8]) async throws(ResultStorageError) {
        let path = files.partialPath(job: job)
        try await run { () throws(ResultStorageError) in
            let fd = open(path, O_WRONLY | O_CREAT | O_CLOEXEC, 0o644)
            guard fd >= 0 else { throw ResultStorageError(.write, path: path, errno: errno) }
            defer { close(fd) }
            let n = bytes.withUnsafeBytes { pwrite(fd, $0.baseAddress, $0.count, off_t(offset)) }
            guard n == bytes.count else { throw ResultStorageError(.write, path: path, errno: errno) }
            guard fsync(fd) == 0 else { throw ResultStorageError(.write, path: path, errno: errno) }
        }
    }

    /// Checks the assembled file against `sha256` and `size` and moves it into place; false (and the
    /// partial file deleted) on a mismatch.
    func finish(job: String, sha256: String, size: Int64) async throws(ResultStorageError) -> Bool {
        let path = files.partialPath(job: job)
        let target = files.resultPath(sha256: sha256)
        return try await run { () throws(ResultStorageError) -> Bool in
            let digest: FileDigest
            do { digest = try FileDigest.of(file: path) } catch { throw ResultStorageError(.read, path: path, errno: errno) }
            guard digest.sha256 == sha256, digest.size == size else {
                unlink(path)
                return false
            }
            if FileManager.default.fileExists(atPath: target) {
                unlink(path)  // the same bytes are there already (results are content-addressed)
            } else {
                guard rename(path, target) == 0 else { throw ResultStorageError(.move, path: target, errno: errno) }
            }
            return true
        }
    }

    private func run<T: Sendable>(_ work: @escaping @Sendable () throws(ResultStorageError) -> T) async throws(ResultStorageError) -> T {
        do {
            return try await threadPool.runIfActive { try work() }
        } catch let error as ResultStorageError {
            throw error
        } catch {
            throw ResultStorageError(.unavailable, path: files.root, errno: 0)
        }
    }
}

/// The gateway's disk failed a result: which step, which file, the system's reason.
struct ResultStorageError: Error, CustomStringConvertible {
    enum Step: String {
        case write, read, move
        case unavailable = "use the thread pool"
    }
    let step: Step
    let path: String
    let errno: Int32

    init(_ step: Step, path: String, errno: Int32) {
        self.step = step
        self.path = path
        self.errno = errno
    }

    var description: String {
        "cannot \(step.rawValue) \(path)" + (errno != 0 ? ": \(String(cString: strerror(errno)))" : "")
    }
}
