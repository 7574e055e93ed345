import Crypto
import Foundation
import KilnCore

/// Crate files fetched for builds, kept by the fetch service for the whole farm (and across its
/// restarts), addressed by the SHA-256 that `Cargo.lock` pins. Nothing in it is trusted: every read re-hashes the file, and an entry
/// that no longer matches its name (corrupted, swapped, truncated) is evicted and reported as a miss,
/// so the caller fetches it again. Workers never see the cache itself: they get bytes over the bus and
/// check them against their own lock file once more.
///
/// Entries are written to a temporary file and renamed into place, so concurrent workers never see a
/// half-written crate; the size is bounded, oldest-used first out.
public final class CrateCache: Sendable {
    public struct Configuration: Sendable {
        public var directory: String
        /// Evict (least recently used first) when the cache grows past this many bytes.
        public var maxBytes: Int64 = 4 << 30

        public init(directory: String, maxBytes: Int64 = 4 << 30) {
            self.directory = directory
            self.maxBytes = maxBytes
        }
    }

    public let configuration: Configuration

    public init(configuration: Configuration) throws {
        self.configuration = configuration
        try FileManager.default.createDirectory(atPath: configuration.directory, withIntermediateDirectories: true, attributes: [.posixPermissions: 0o700])
    }

    /// What a lookup found.
    public enum Lookup: Equatable, Sendable {
        case hit([UInt8])
        case miss
        /// The entry did not match its checksum and was removed.
        case evicted
    }

    func path(_ sha256: String, _ suffix: String) -> String { configuration.directory + "/" + sha256 + suffix }

    /// The crate whose SHA-256 is `sha256`, verified now.
    public func crate(sha256: String) -> Lookup {
        guard Hex.isLowercase(sha256, bytes: 32) else { return .miss }
        let file = path(sha256, ".crate")
        guard let data = FileManager.default.contents(atPath: file) else { return .miss }
        let bytes = [UInt8](data)
        guard SHA256.hash(data: bytes).hexString == sha256 else {
            // Evicting: a file already gone is evicted.
            try? FileManager.default.removeItem(atPath: file)
            // Evicting: a file already gone is evicted.
            try? FileManager.default.removeItem(atPath: path(sha256, ".json"))
            return .evicted
        }
        touch(file)
        return .hit(bytes)
    }

    /// `length` bytes of the cached crate from `offset` (nil: not cached, or the offset is past its
    /// end). Not re-hashed: the first chunk's lookup verified the entry, and the worker checks the
    /// whole file against its lock anyway.
    public func chunk(sha256: String, offset: Int64, length: Int) -> (bytes: [UInt8], size: Int64)? {
        guard Hex.isLowercase(sha256, bytes: 32), offset >= 0, length > 0,
            let handle = FileHandle(forReadingAtPath: path(sha256, ".crate"))
        else { return nil }
        defer { try? handle.close() }  // read-only: a failed close loses nothing
        guard let size = try? handle.seekToEnd(), Int64(size) > offset || (size == 0 && offset == 0) else { return nil }
        do {
            try handle.seek(toOffset: UInt64(offset))
            let data = try handle.read(upToCount: length) ?? Data()
            return ([UInt8](data), Int64(size))
        } catch {
            return nil
        }
    }

    /// The registry index line kept beside the crate (its `cksum` must name the crate).
    public func indexLine(sha256: String) -> String? {
        guard Hex.isLowercase(sha256, bytes: 32), let data = FileManager.default.contents(atPath: path(sha256, ".json")), data.count <= 1 << 20 else { return nil }
        return String(data: data, encoding: .utf8)
    }

    /// Stores a crate (its digest checked here too) and its index line.
    public func store(sha256: String, crate bytes: [UInt8], indexLine: String) throws {
        guard Hex.isLowercase(sha256, bytes: 32), SHA256.hash(data: bytes).hexString == sha256 else {
            throw CocoaError(.fileWriteUnknown, userInfo: [NSLocalizedDescriptionKey: "refusing to cache a crate that does not match \(sha256)"])
        }
        try write(Data(bytes), to: path(sha256, ".crate"))
        try write(Data(indexLine.utf8), to: path(sha256, ".json"))
    }

    private func write(_ data: Data, to file: String) throws {
        let temporary = file + ".tmp-" + UUID().uuidString
        guard FileManager.default.createFile(atPath: temporary, contents: data, attributes: [.posixPermissions: 0o600]) else {
            throw CocoaError(.fileWriteUnknown, userInfo: [NSLocalizedDescriptionKey: "cannot write \(temporary)"])
        }
        guard rename(temporary, file) == 0 else {
            let error = errno
            unlink(temporary)
            throw POSIXError(POSIXErrorCode(rawValue: error) ?? .EIO)
        }
    }

    private func touch(_ file: String) {
        _ = utimensat(AT_FDCWD, file, nil, 0)  // both times now: the entry was just used
    }

    /// Bytes of crate files the cache holds now.
    public func totalBytes() -> Int64 {
        let fm = FileManager.default
        // A cache directory that cannot be listed holds nothing this service can serve.
        guard let names = try? fm.contentsOfDirectory(atPath: configuration.directory) else { return 0 }
        return names.filter { $0.hasSuffix(".crate") }.reduce(0) { total, name in
            total + (((try? fm.attributesOfItem(atPath: configuration.directory + "/" + name))?[.size] as? NSNumber)?.int64Value ?? 0)
        }
    }

    /// Removes the least recently used crates until the cache is within `maxBytes`. Returns the bytes freed.
    @discardableResult
    public func evictToLimit() -> Int64 {
        let fm = FileManager.default
        guard let names = try? fm.contentsOfDirectory(atPath: configuration.directory) else { return 0 }
        var entries: [(sha: String, size: Int64, used: Date)] = []
        var total: Int64 = 0
        for name in names where name.hasSuffix(".crate") {
            let file = configuration.directory + "/" + name
            guard let attributes = try? fm.attributesOfItem(atPath: file) else { continue }
            let size = (attributes[.size] as? NSNumber)?.int64Value ?? 0
            entries.append((String(name.dropLast(6)), size, attributes[.modificationDate] as? Date ?? .distantPast))
            total += size
        }
        var freed: Int64 = 0
        for entry in entries.sorted(by: { $0.used < $1.used }) where total - freed > configuration.maxBytes {
            // Evicting: a file already gone is evicted (the total is recounted from the directory).
            try? fm.removeItem(atPath: path(entry.sha, ".crate"))
            // Evicting: a file already gone is evicted.
            try? fm.removeItem(atPath: path(entry.sha, ".json"))
            freed += entry.size
        }
        return freed
    }
}
