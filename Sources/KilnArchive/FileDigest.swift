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
        guard let fh = FileHandle(forReadingAtPath: path) else {
            throw ArchiveError(.io, "cannot open \(path)")
        }
        defer { try? fh.close() }
        var hasher = SHA256()
        var size: Int64 = 0
        while let chunk = try fh.read(upToCount: 1 << 20), !chunk.isEmpty {
            hasher.update(data: chunk)
            size += Int64(chunk.count)
        }
        return FileDigest(sha256: hasher.finalize().hexString, size: size)
    }

    public static func of<D: DataProtocol>(bytes: D) -> FileDigest {
        FileDigest(sha256: SHA256.hash(data: bytes).hexString, size: Int64(bytes.count))
    }
}
