import Crypto
import Foundation
import KilnCore
import Synchronization

/// The farm's compiled-dependency cache as the fetch service keeps it (#31 item 3,
/// docs/dependency-cache.md): per key, a worker's signed seal and the archive it declares.
///
/// The service trusts nothing in it and checks only what it can without a key: an upload becomes an
/// entry only when every declared byte arrived in order and the archive's SHA-256 matches the one the
/// seal's upload declared. Whether to *use* an entry is the worker's decision (the seal's signature,
/// the farm's keys). The first complete entry for a key stays; a later upload for it is told the
/// entry exists. Bounded everywhere: the entry size, uploads in progress at once (one per worker,
/// `maxUploads` in all), the total size (least recently used entries go first).
public final class DependencyCacheStore: Sendable {
    public struct Configuration: Sendable {
        public var directory: String
        /// Largest archive accepted.
        public var maxEntryBytes: Int64 = 2 << 30
        /// Evict least recently used entries past this many bytes.
        public var maxBytes: Int64 = 16 << 30
        /// Uploads in progress at once; more are refused (the worker builds without storing).
        public var maxUploads = 4
        /// Largest seal (statement, key, certificate).
        public var maxSealBytes = 64 << 10

        public init(directory: String) { self.directory = directory }
    }

    struct Upload {
        var key: String
        var size: Int64
        var sha256: String
        var written: Int64
        var hasher: SHA256
        var handle: FileHandle
        var directory: String
        var started: ContinuousClock.Instant
    }

    public let configuration: Configuration
    private let uploads = Mutex<[String: Upload]>([:])

    public init(configuration: Configuration) throws {
        self.configuration = configuration
        for dir in ["", "/entries", "/incoming"] {
            try FileManager.default.createDirectory(
                atPath: configuration.directory + dir, withIntermediateDirectories: true, attributes: [.posixPermissions: 0o700])
        }
        // Uploads a previous run left unfinished are never finished.
        for name in (try? FileManager.default.contentsOfDirectory(atPath: configuration.directory + "/incoming")) ?? [] {
            Self.removeUnreferenced(configuration.directory + "/incoming/" + name)
        }
    }

    func entryDirectory(_ key: String) -> String { configuration.directory + "/entries/" + key }

    public func hasEntry(_ key: String) -> Bool {
        Hex.isLowercase(key, bytes: 32) && FileManager.default.fileExists(atPath: entryDirectory(key) + "/archive")
    }

    /// `length` bytes of an entry's part from `offset`, and the part's size (nil: no such entry).
    public func read(key: String, part: String, offset: Int64, length: Int) -> (bytes: [UInt8], size: Int64)? {
        guard Hex.isLowercase(key, bytes: 32), part == "seal" || part == "archive", hasEntry(key) else { return nil }
        let file = entryDirectory(key) + "/" + part
        guard let handle = FileHandle(forReadingAtPath: file) else { return nil }
        defer { try? handle.close() }  // read-only
        do {
            let size = Int64(try handle.seekToEnd())
            guard offset >= 0, offset <= size else { return nil }
            try handle.seek(toOffset: UInt64(offset))
            let bytes = [UInt8](try handle.read(upToCount: length) ?? Data())
            if offset == 0 && part == "seal" { touch(entryDirectory(key)) }
            return (bytes, size)
        } catch {
            return nil
        }
    }

    public enum StoreOutcome: Equatable, Sendable {
        /// The farm has this key already: send nothing more.
        case exists
        case accepted
        /// The last chunk arrived and matched: the entry is in.
        case stored
    }

    /// Starts `worker`'s upload of the entry for `key`: its seal, and the archive it declares.
    public func begin(worker: String, key: String, seal: [UInt8], archiveSize: Int64, archiveSha256: String, now: ContinuousClock.Instant) throws(FetchRefusal)
        -> StoreOutcome
    {
        guard Hex.isLowercase(key, bytes: 32), Hex.isLowercase(archiveSha256, bytes: 32) else {
            throw FetchRefusal(.badRequest, "a dependency entry needs a hex SHA-256 key and archive digest")
        }
        guard seal.count <= configuration.maxSealBytes else { throw FetchRefusal(.tooLarge, "the seal is larger than \(configuration.maxSealBytes) bytes") }
        guard archiveSize > 0, archiveSize <= configuration.maxEntryBytes else {
            throw FetchRefusal(.tooLarge, "a dependency entry of \(archiveSize) bytes is outside 1…\(configuration.maxEntryBytes)")
        }
        if hasEntry(key) { return .exists }
        let directory = configuration.directory + "/incoming/" + worker
        try uploads.withLock { (all: inout [String: Upload]) throws(FetchRefusal) in
            if let previous = all.removeValue(forKey: worker) { Self.discard(previous) }
            guard all.count < configuration.maxUploads else {
                throw FetchRefusal(.quota, "the fetch service is taking \(configuration.maxUploads) dependency uploads already", retryable: true)
            }
            let fm = FileManager.default
            Self.removeUnreferenced(directory)  // a fresh directory per upload
            guard (try? fm.createDirectory(atPath: directory, withIntermediateDirectories: false, attributes: [.posixPermissions: 0o700])) != nil,
                fm.createFile(atPath: directory + "/seal", contents: Data(seal), attributes: [.posixPermissions: 0o600]),
                fm.createFile(atPath: directory + "/archive", contents: nil, attributes: [.posixPermissions: 0o600]),
                let handle = FileHandle(forWritingAtPath: directory + "/archive")
            else { throw FetchRefusal(.upstream, "the fetch service cannot write a dependency entry", retryable: true) }
            all[worker] = Upload(
                key: key, size: archiveSize, sha256: archiveSha256, written: 0, hasher: SHA256(), handle: handle, directory: directory, started: now)
        }
        return .accepted
    }

    /// One archive chunk of `worker`'s upload, at `offset` (the next byte expected).
    public func append(worker: String, key: String, offset: Int64, bytes: [UInt8]) throws(FetchRefusal) -> StoreOutcome {
        let finished: Upload? = try uploads.withLock { (all: inout [String: Upload]) throws(FetchRefusal) -> Upload? in
            guard var upload = all[worker], upload.key == key else {
                throw FetchRefusal(.badRequest, "no dependency upload for this key is in progress (send its seal first)")
            }
            guard offset == upload.written, !bytes.isEmpty, upload.written + Int64(bytes.count) <= upload.size else {
                all[worker] = nil
                Self.discard(upload)
                throw FetchRefusal(.badRequest, "chunk at \(offset) of \(bytes.count) bytes does not follow byte \(upload.written) of \(upload.size): upload dropped")
            }
            do { try upload.handle.write(contentsOf: Data(bytes)) } catch {
                all[worker] = nil
                Self.discard(upload)
                throw FetchRefusal(.upstream, "the fetch service cannot write a dependency entry: \(error)", retryable: true)
            }
            bytes.withUnsafeBytes { upload.hasher.update(bufferPointer: $0) }
            upload.written += Int64(bytes.count)
            if upload.written < upload.size {
                all[worker] = upload
                return nil
            }
            all[worker] = nil
            return upload
        }
        guard let upload = finished else { return .accepted }
        try? upload.handle.close()  // every byte went through write(contentsOf:), which throws on failure
        guard upload.hasher.finalize().hexString == upload.sha256 else {
            Self.removeUnreferenced(upload.directory)
            throw FetchRefusal(.badRequest, "the dependency archive does not match the SHA-256 its seal declared: dropped")
        }
        if hasEntry(key) {
            Self.removeUnreferenced(upload.directory)  // another worker's entry came first
            return .exists
        }
        // Into place in one rename: readers see a whole entry or none.
        guard rename(upload.directory, entryDirectory(key)) == 0 else {
            Self.removeUnreferenced(upload.directory)  // lost a race to an identical key, or the disk failed
            return .exists
        }
        return .stored
    }

    private static func discard(_ upload: Upload) {
        try? upload.handle.close()  // the upload is abandoned; its bytes are removed next
        removeUnreferenced(upload.directory)
    }

    /// Removes an upload's directory nothing refers to (refused, abandoned, superseded). Best effort:
    /// what stays is removed by the worker's next upload or the service's next start, and is never
    /// served (only `entries/` is).
    static func removeUnreferenced(_ path: String) {
        try? FileManager.default.removeItem(atPath: path)  // see above: a leftover is harmless and removed later
    }

    /// Drops uploads older than `window`; evicts entries, least recently used first, past `maxBytes`.
    /// Returns the bytes evicted.
    @discardableResult
    public func housekeeping(now: ContinuousClock.Instant, window: Duration) -> Int64 {
        let stale = uploads.withLock { all -> [Upload] in
            let old = all.filter { now - $0.value.started > window }
            for key in old.keys { all[key] = nil }
            return Array(old.values)
        }
        stale.forEach(Self.discard)
        var entries = entryList()
        var total = entries.reduce(0) { $0 + $1.bytes }
        var freed: Int64 = 0
        entries.sort { $0.used < $1.used }
        for entry in entries where total > configuration.maxBytes {
            try? FileManager.default.removeItem(atPath: entryDirectory(entry.key))  // counted as freed only when it went
            if !FileManager.default.fileExists(atPath: entryDirectory(entry.key)) {
                total -= entry.bytes
                freed += entry.bytes
            }
        }
        return freed
    }

    /// Bytes the entries hold.
    public func totalBytes() -> Int64 { entryList().reduce(0) { $0 + $1.bytes } }

    private func entryList() -> [(key: String, bytes: Int64, used: Date)] {
        let fm = FileManager.default
        let names = (try? fm.contentsOfDirectory(atPath: configuration.directory + "/entries")) ?? []  // none yet
        return names.compactMap { key in
            let dir = entryDirectory(key)
            guard let archive = try? fm.attributesOfItem(atPath: dir + "/archive"),  // a half-removed entry is skipped
                let used = try? fm.attributesOfItem(atPath: dir)[.modificationDate] as? Date  // likewise
            else { return nil }
            let seal = (try? fm.attributesOfItem(atPath: dir + "/seal")[.size] as? Int64) ?? 0  // no seal: counted as empty
            return (key, ((archive[.size] as? Int64) ?? 0) + seal, used)
        }
    }

    private func touch(_ path: String) {
        // Recency for eviction only; an entry whose time cannot be set is merely evicted sooner.
        try? FileManager.default.setAttributes([.modificationDate: Date()], ofItemAtPath: path)
    }
}
