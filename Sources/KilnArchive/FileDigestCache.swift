import Crypto
import Foundation
import KilnCore

/// Digests of files that stay the same from build to build — the worker's own executable and the
/// toolchain's binaries, recorded in every provenance — remembered across one-shot workers (#31).
/// A fresh worker per job otherwise hashes ~120 MB of the same bytes for every job: most of a hello
/// job's time that is not the compiler's.
///
/// An entry is keyed by the file's identity as the kernel reports it on the open descriptor that is
/// hashed: path, device, inode, size, modification and change times (nanoseconds). Rewriting a file
/// changes its change time, which no unprivileged process can set, so a changed file is hashed again;
/// only root could forge an entry, and root owns the host already. The directory must be the
/// caller's own and writable by nobody else, or the cache is not used (`init` returns nil). Entries
/// are tiny files written atomically (create, then rename); one that does not parse is ignored and
/// replaced. A file that changes while it is hashed is not remembered.
///
/// **Known digests** come from a manifest shipped with the files themselves: a VM image lists the
/// digests of its kiln-worker and of its dm-verity toolchain's binaries, computed when the image was
/// built, in the same measured initramfs (`addKnownDigests(fromFile:)`). Under TCG hashing them in the
/// guest took seconds per build.
public struct FileDigestCache: Sendable {
    /// Where hashed digests are remembered; nil: only known digests, nothing remembered.
    public let directory: String?
    /// Digests by absolute path from manifests; used when the open file's size matches.
    public private(set) var known: [String: FileDigest] = [:]

    /// Remembers nothing; answers only from known digests.
    public init() {
        directory = nil
        maxEntries = 0
    }

    /// Most entries kept: one is written per distinct file identity hashed (a new worker binary, a
    /// toolchain update), not per job, but nothing else would ever bound the directory. Past it, the
    /// oldest half is deleted when an entry is written.
    public let maxEntries: Int
    public static let defaultMaxEntries = 1024

    /// Uses `directory`, creating it (mode 0700) if missing. `nil` when it is not a directory owned
    /// by this user and closed to everyone else: a cache others can write is a cache they can forge.
    public init?(directory: String, maxEntries: Int = defaultMaxEntries) {
        self.maxEntries = max(2, maxEntries)
        // Creation failing is not an error of its own: the checks below refuse what is not usable.
        try? FileManager.default.createDirectory(atPath: directory, withIntermediateDirectories: true, attributes: [.posixPermissions: 0o700])
        var st = stat()
        guard lstat(directory, &st) == 0, st.st_mode & S_IFMT == S_IFDIR, st.st_uid == geteuid(), st.st_mode & 0o022 == 0 else { return nil }
        self.directory = directory
    }

    /// Whether the last `digest(of:)` was answered from the cache (for the caller's log).
    public enum Source: Sendable { case cache, known, hashed }

    /// Most bytes of a known-digests manifest.
    public static let maxManifestBytes = 64 << 10

    /// Adds the digests a manifest lists, one `<64 hex> <size> <absolute path>` per line. The file
    /// must be this user's and closed to others, like the cache directory: its word is taken for
    /// the files it names.
    public mutating func addKnownDigests(fromFile path: String) throws {
        let fd = open(path, O_RDONLY | O_CLOEXEC | O_NOFOLLOW)
        guard fd >= 0 else { throw ArchiveError(.io, "cannot open \(path): \(String(cString: strerror(errno)))") }
        defer { close(fd) }
        var st = stat()
        guard fstat(fd, &st) == 0, st.st_mode & S_IFMT == S_IFREG, st.st_uid == geteuid(), st.st_mode & 0o022 == 0 else {
            throw ArchiveError(.io, "\(path) is not a regular file of this user's closed to others")
        }
        guard st.st_size <= Self.maxManifestBytes else { throw ArchiveError(.io, "\(path) is larger than \(Self.maxManifestBytes) bytes") }
        var bytes = [UInt8](repeating: 0, count: Int(st.st_size))
        let n = bytes.withUnsafeMutableBytes { pread(fd, $0.baseAddress, $0.count, 0) }
        guard n == bytes.count else { throw ArchiveError(.io, "cannot read \(path)") }
        var listed: [String: FileDigest] = [:]  // all or nothing: a bad line adds none of the manifest
        for (number, line) in String(decoding: bytes, as: UTF8.self).split(separator: "\n").enumerated() {
            let fields = line.split(separator: " ", maxSplits: 2)
            guard fields.count == 3, let digest = Self.parse(sha256: fields[0], size: fields[1]), fields[2].hasPrefix("/") else {
                throw ArchiveError(.io, "\(path) line \(number + 1) is not '<sha256> <size> <absolute path>'")
            }
            listed[String(fields[2])] = digest
        }
        known.merge(listed) { _, new in new }
    }

    static func parse(sha256: Substring, size: Substring) -> FileDigest? {
        guard sha256.count == 64, sha256.utf8.allSatisfy({ ($0 >= 0x30 && $0 <= 0x39) || ($0 >= 0x61 && $0 <= 0x66) }),
            let n = Int64(size), n >= 0
        else { return nil }
        return FileDigest(sha256: String(sha256), size: n)
    }

    /// The file's digest: remembered if its identity is unchanged since it was hashed, else hashed
    /// now (and remembered).
    public func digest(of path: String) throws -> (FileDigest, Source) {
        let fd = open(path, O_RDONLY | O_CLOEXEC)
        guard fd >= 0 else { throw ArchiveError(.io, "cannot open \(path): \(String(cString: strerror(errno)))") }
        defer { close(fd) }
        var before = stat()
        guard fstat(fd, &before) == 0 else { throw ArchiveError(.io, "cannot stat \(path)") }
        if let listed = known[path], listed.size == Int64(before.st_size) {
            return (listed, .known)
        }
        guard let directory else { return (try FileDigest.of(descriptor: fd, path: path), .hashed) }
        let entry = directory + "/" + Self.entryName(path: path, identity: before)
        if let remembered = Self.read(entry: entry), remembered.size == Int64(before.st_size) {
            return (remembered, .cache)
        }
        let digest = try FileDigest.of(descriptor: fd, path: path)
        var after = stat()
        if fstat(fd, &after) == 0, Self.identity(after) == Self.identity(before) {
            Self.evictOldest(in: directory, keeping: maxEntries - 1)
            Self.write(digest, entry: entry)
        }
        return (digest, .hashed)
    }

    static func identity(_ st: stat) -> [Int64] {
        [
            Int64(st.st_dev), Int64(st.st_ino), Int64(st.st_size), Int64(st.st_mtim.tv_sec), Int64(st.st_mtim.tv_nsec),
            Int64(st.st_ctim.tv_sec), Int64(st.st_ctim.tv_nsec),
        ]
    }

    static func entryName(path: String, identity st: stat) -> String {
        let key = path + "\0" + identity(st).map(String.init).joined(separator: ":")
        return String(SHA256.hash(data: Array(key.utf8)).hexString.prefix(40))
    }

    /// `<64 hex> <size>\n`, read without following a link and at most 128 bytes.
    static func read(entry: String) -> FileDigest? {
        let fd = open(entry, O_RDONLY | O_CLOEXEC | O_NOFOLLOW)
        guard fd >= 0 else { return nil }
        defer { close(fd) }
        var buffer = [UInt8](repeating: 0, count: 128)
        let n = buffer.withUnsafeMutableBytes { Foundation.read(fd, $0.baseAddress, $0.count) }
        guard n > 0, n < 128 else { return nil }
        let fields = String(decoding: buffer[0..<n], as: UTF8.self).split(separator: " ")
        guard fields.count == 2, fields[1].last == "\n" else { return nil }
        return parse(sha256: fields[0], size: fields[1].dropLast())
    }

    /// When the directory holds more than `keeping` entries, deletes the oldest (by modification
    /// time) down to half of `keeping`. Entries are named by a hash, never by anything a build chose;
    /// the directory is the worker's own, so what is listed is what this cache wrote.
    static func evictOldest(in directory: String, keeping: Int) {
        // An unreadable directory evicts nothing: the write after it fails too, and the file is hashed again next time.
        guard let names = try? FileManager.default.contentsOfDirectory(atPath: directory), names.count > keeping else { return }
        var aged: [(name: String, modified: Int64)] = []
        for name in names {
            var st = stat()
            guard lstat(directory + "/" + name, &st) == 0, st.st_mode & S_IFMT == S_IFREG else { continue }
            aged.append((name, Int64(st.st_mtim.tv_sec) * 1_000_000_000 + Int64(st.st_mtim.tv_nsec)))
        }
        aged.sort { $0.modified < $1.modified }
        for entry in aged.prefix(max(0, aged.count - keeping / 2)) { unlink(directory + "/" + entry.name) }
    }

    static func write(_ digest: FileDigest, entry: String) {
        let temporary = entry + ".\(getpid()).tmp"
        let fd = open(temporary, O_WRONLY | O_CREAT | O_EXCL | O_CLOEXEC | O_NOFOLLOW, 0o600)
        guard fd >= 0 else { return }  // another worker is writing it, or the disk refuses: hashed again next time
        let line = Array("\(digest.sha256) \(digest.size)\n".utf8)
        let written = line.withUnsafeBytes { Foundation.write(fd, $0.baseAddress, $0.count) }
        close(fd)
        if written != line.count || rename(temporary, entry) != 0 {
            unlink(temporary)
        }
    }
}
