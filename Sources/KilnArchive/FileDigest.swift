import Crypto
import Foundation
import KilnCore

/// The SHA-256 and size of a file's exact bytes.
public struct FileDigest: Sendable, Equatable, Hashable, Codable {
    public var sha256: String
    public var size: Int64

    public init(sha256: String, size: Int64) {
        self.sha256 = sha256
        self.size = size
    }

    /// Streams the file through SHA-256 in 1 MiB reads (constant memory).
    public static func of(file path: String) throws -> FileDigest {
        let fd = open(path, O_RDONLY | O_CLOEXEC)
        guard fd >= 0 else { throw ArchiveError(.io, "cannot open \(path)") }
        defer { close(fd) }
        return try of(descriptor: fd, path: path)
    }

    /// Streams an open file through SHA-256 from its start, in 1 MiB reads (`path` is for errors).
    public static func of(descriptor fd: Int32, path: String) throws -> FileDigest {
        var hasher = SHA256()
        var size: Int64 = 0
        var buffer = [UInt8](repeating: 0, count: 1 << 20)
        while true {
            let n = buffer.withUnsafeMutableBytes { pread(fd, $0.baseAddress, $0.count, off_t(size)) }
            if n < 0 {
                if errno == EINTR { continue }
                throw ArchiveError(.io, "cannot read \(path): \(String(cString: strerror(errno)))")
            }
            if n == 0 { break }
            buffer.withUnsafeBytes { hasher.update(bufferPointer: UnsafeRawBufferPointer(rebasing: $0[0..<n])) }
            size += Int64(n)
        }
        return FileDigest(sha256: hasher.finalize().hexString, size: size)
    }

    public static func of<D: DataProtocol>(bytes: D) -> FileDigest {
        FileDigest(sha256: SHA256.hash(data: bytes).hexString, size: Int64(bytes.count))
    }
}
