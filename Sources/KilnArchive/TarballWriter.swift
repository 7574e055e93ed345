import CArchive
import Crypto
import Foundation
import KilnCore

/// Writes a deterministic `.tar.gz` (design §5 step 6): the same inputs give the same bytes.
///
/// Entries must be added in ascending byte order of their paths (the writer checks), every entry gets
/// mtime = `mtime` (SOURCE_DATE_EPOCH), uid/gid 0 with empty owner names, mode 0644 or 0755 (0755 for
/// directories and executables), and the gzip header carries no timestamp and no file name.
/// Files are hashed while they are copied in, so packing and digesting take one read.
public final class TarballWriter {
    public let path: String
    public let mtime: Int64
    private var archive: OpaquePointer?
    private var lastPath: [UInt8]?
    private var buffer = [UInt8](repeating: 0, count: 1 << 20)

    public init(path: String, mtime: Int64, compressionLevel: Int = 6) throws {
        ArchiveLocale.ensureUTF8()
        self.path = path
        self.mtime = mtime
        guard let a = archive_write_new() else { throw ArchiveError(.io, "libarchive: out of memory") }
        archive = a
        archive_write_set_format_pax_restricted(a)
        archive_write_add_filter_gzip(a)
        // NULL disables the gzip header timestamp (MTIME = 0); no name is stored either.
        archive_write_set_filter_option(a, "gzip", "timestamp", nil)
        archive_write_set_filter_option(a, "gzip", "compression-level", String(compressionLevel))
        archive_write_set_bytes_in_last_block(a, 1)
        guard archive_write_open_filename(a, path) == ARCHIVE_OK else {
            let message = ArchiveExtractor.errorString(a)
            archive_write_free(a)
            archive = nil
            throw ArchiveError(.io, "cannot create \(path): \(message)")
        }
    }

    deinit {
        if let archive { archive_write_free(archive) }
    }

    public func addDirectory(_ archivePath: String) throws {
        try header(archivePath, type: CA_AE_IFDIR, perm: 0o755, size: 0)
    }

    /// Copies `sourcePath` in as `archivePath`; mode 0755 if the source is executable by anyone.
    @discardableResult
    public func addFile(_ archivePath: String, contentsOf sourcePath: String) throws -> FileDigest {
        var st = stat()
        guard stat(sourcePath, &st) == 0 else { throw ArchiveError(.io, "cannot stat \(sourcePath)") }
        let fd = open(sourcePath, O_RDONLY)
        guard fd >= 0 else { throw ArchiveError(.io, "cannot open \(sourcePath)") }
        defer { close(fd) }
        try header(archivePath, type: CA_AE_IFREG, perm: (st.st_mode & 0o111) != 0 ? 0o755 : 0o644, size: Int64(st.st_size))
        var hasher = SHA256()
        var total: Int64 = 0
        while true {
            let n = buffer.withUnsafeMutableBytes { read(fd, $0.baseAddress, $0.count) }
            if n == 0 { break }
            guard n > 0 else { throw ArchiveError(.io, "cannot read \(sourcePath)") }
            try buffer.withUnsafeBytes { raw in
                let chunk = UnsafeRawBufferPointer(rebasing: raw[0..<n])
                hasher.update(bufferPointer: chunk)
                guard archive_write_data(archive, chunk.baseAddress, n) == n else {
                    throw ArchiveError(.io, "cannot write \(archivePath) into \(path): \(ArchiveExtractor.errorString(archive))")
                }
            }
            total += Int64(n)
        }
        guard total == Int64(st.st_size) else { throw ArchiveError(.io, "\(sourcePath) changed while it was packed") }
        return FileDigest(sha256: hasher.finalize().hexString, size: total)
    }

    @discardableResult
    public func addFile(_ archivePath: String, data: [UInt8], executable: Bool = false) throws -> FileDigest {
        try header(archivePath, type: CA_AE_IFREG, perm: executable ? 0o755 : 0o644, size: Int64(data.count))
        if !data.isEmpty {
            let n = data.withUnsafeBytes { archive_write_data(archive, $0.baseAddress, $0.count) }
            guard n == data.count else { throw ArchiveError(.io, "cannot write \(archivePath): \(ArchiveExtractor.errorString(archive))") }
        }
        return FileDigest.of(bytes: data)
    }

    public func addSymlink(_ archivePath: String, target: String) throws {
        try header(archivePath, type: CA_AE_IFLNK, perm: 0o777, size: 0, symlink: target)
    }

    /// Flushes and closes the file.
    public func finish() throws {
        guard let a = archive else { return }
        archive = nil
        let r = archive_write_close(a)
        let message = ArchiveExtractor.errorString(a)
        archive_write_free(a)
        guard r == ARCHIVE_OK else { throw ArchiveError(.io, "cannot finish \(path): \(message)") }
    }

    private func header(_ archivePath: String, type: UInt32, perm: UInt32, size: Int64, symlink: String? = nil) throws {
        guard archive != nil else { throw ArchiveError(.io, "tarball \(path) is already finished") }
        let bytes = Array(archivePath.utf8)
        if let last = lastPath, !last.lexicographicallyPrecedes(bytes) {
            throw ArchiveError(.io, "tarball entries must be added in ascending path order ('\(archivePath)' after '\(String(decoding: last, as: UTF8.self))')")
        }
        lastPath = bytes
        guard let e = archive_entry_new() else { throw ArchiveError(.io, "libarchive: out of memory") }
        defer { archive_entry_free(e) }
        archive_entry_set_pathname_utf8(e, archivePath)
        archive_entry_set_mtime(e, time_t(mtime), 0)
        archive_entry_set_uid(e, 0)
        archive_entry_set_gid(e, 0)
        archive_entry_set_uname_utf8(e, "")
        archive_entry_set_gname_utf8(e, "")
        archive_entry_set_filetype(e, type)
        archive_entry_set_perm(e, mode_t(perm))
        archive_entry_set_size(e, la_int64_t(size))
        if let symlink { archive_entry_set_symlink_utf8(e, symlink) }
        guard archive_write_header(archive, e) == ARCHIVE_OK else {
            throw ArchiveError(.io, "cannot add \(archivePath) to \(path): \(ArchiveExtractor.errorString(archive))")
        }
    }
}

extension TarballWriter {
    /// Packs a whole directory tree (paths relative to it), returning the digest of every regular file.
    @discardableResult
    public static func pack(directory: String, to output: String, mtime: Int64, prefix: String = "") throws -> [String: FileDigest] {
        let writer = try TarballWriter(path: output, mtime: mtime)
        let digests = try writer.addTree(directory: directory, prefix: prefix)
        try writer.finish()
        return digests
    }

    /// Adds every entry under `directory`, sorted, as `prefix + relative path`; returns the digest of
    /// every regular file and whether it was packed executable (0755).
    @discardableResult
    public func addTree(directory: String, prefix: String = "") throws -> [String: FileDigest] {
        try addTreeWithModes(directory: directory, prefix: prefix).mapValues(\.digest)
    }

    public func addTreeWithModes(directory: String, prefix: String = "") throws -> [String: (digest: FileDigest, executable: Bool)] {
        var digests: [String: (digest: FileDigest, executable: Bool)] = [:]
        for rel in try Self.sortedEntries(of: directory) {
            let full = directory + "/" + rel
            var st = stat()
            guard lstat(full, &st) == 0 else { throw ArchiveError(.io, "cannot stat \(full)") }
            switch st.st_mode & S_IFMT {
            case S_IFDIR: try addDirectory(prefix + rel)
            case S_IFREG: digests[prefix + rel] = (try addFile(prefix + rel, contentsOf: full), (st.st_mode & 0o111) != 0)
            case S_IFLNK: try addSymlink(prefix + rel, target: try FileManager.default.destinationOfSymbolicLink(atPath: full))
            default: continue
            }
        }
        return digests
    }

    /// All paths below `directory`, in byte order (the order a deterministic tarball needs).
    public static func sortedEntries(of directory: String) throws -> [String] {
        guard let paths = FileManager.default.enumerator(atPath: directory)?.allObjects as? [String] else {
            throw ArchiveError(.io, "cannot list \(directory)")
        }
        return paths.sorted { Array($0.utf8).lexicographicallyPrecedes(Array($1.utf8)) }
    }
}
