import Foundation
import KilnArchive

/// Result tarballs and uploads on disk: `results/<sha256>.tar.gz` (written to `partial/` first and
/// renamed only after the whole-file digest checks), `uploads/<job>` for uploaded sources, which
/// arrive in `incoming/` while their request body streams in.
public struct ResultFiles: Sendable {
    public let root: String

    public init(root: String) throws {
        self.root = root
        for d in ["results", "partial", "uploads", "incoming"] {
            try FileManager.default.createDirectory(atPath: root + "/" + d, withIntermediateDirectories: true)
        }
        // A body that was streaming in when the gateway stopped belongs to no job: its client got no
        // answer. Only old ones: gateways sharing this directory (#15) may be receiving theirs right now.
        let now = Date().timeIntervalSince1970
        for leftover in (try? FileManager.default.contentsOfDirectory(atPath: incomingDirectory)) ?? [] {
            var st = stat()
            let path = incomingDirectory + "/" + leftover
            if stat(path, &st) == 0, now - TimeInterval(st.st_mtim.tv_sec) > Self.abandonedUploadAge { unlink(path) }
        }
    }

    /// An upload in `incoming/` untouched this long (seconds) was abandoned.
    static let abandonedUploadAge: TimeInterval = 3600

    /// Request bodies' archives while they stream in (`SubmissionReader`).
    public var incomingDirectory: String { root + "/incoming" }

    public func resultPath(sha256: String) -> String { root + "/results/\(sha256).tar.gz" }
    func partialPath(job: String) -> String { root + "/partial/\(job).part" }
    public func uploadPath(job: String) -> String { root + "/uploads/\(job)" }

    /// Makes a spooled archive `job`'s upload (a rename: same file system).
    func adoptUpload(job: String, from spooled: String) throws {
        guard rename(spooled, uploadPath(job: job)) == 0 else {
            throw CoordinationError(.unavailable, "the gateway cannot store uploads right now (rename failed: errno \(errno)); try again later")
        }
    }

    /// Jobs that have an uploaded source on disk.
    func uploadedJobs() -> [String] {
        (try? FileManager.default.contentsOfDirectory(atPath: root + "/uploads")) ?? []
    }

    /// Seconds since the upload was written.
    func uploadAge(job: String) -> TimeInterval? {
        var st = stat()
        guard stat(uploadPath(job: job), &st) == 0 else { return nil }
        return Date().timeIntervalSince1970 - TimeInterval(st.st_mtim.tv_sec)
    }

    func removeUpload(job: String) {
        // Already gone is fine; a file left behind is removed by the start-up sweep of uploads/.
        try? FileManager.default.removeItem(atPath: uploadPath(job: job))
    }

    /// The stored upload's size, or nil when the job has none.
    func uploadSize(job: String) -> Int64? {
        var st = stat()
        guard stat(uploadPath(job: job), &st) == 0 else { return nil }
        return Int64(st.st_size)
    }

    func resultExists(sha256: String) -> Bool {
        var st = stat()
        return stat(resultPath(sha256: sha256), &st) == 0
    }

    func readUpload(job: String, offset: Int64, length: Int) throws -> [UInt8] {
        try read(uploadPath(job: job), offset: offset, length: length)
    }

    /// A chunk of a stored result (a rebuild's worker fetches the original this way).
    func readResult(sha256: String, offset: Int64, length: Int) throws -> [UInt8] {
        try read(resultPath(sha256: sha256), offset: offset, length: length)
    }

    private func read(_ path: String, offset: Int64, length: Int) throws -> [UInt8] {
        guard offset >= 0, length >= 0 else { throw CoordinationError(.invalid, "bad chunk range") }
        guard let fh = FileHandle(forReadingAtPath: path) else { throw CoordinationError(.notFound, "no such file") }
        defer { try? fh.close() }
        try fh.seek(toOffset: UInt64(offset))
        return Array(try fh.read(upToCount: length) ?? Data())
    }
}
