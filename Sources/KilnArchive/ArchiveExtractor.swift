import CArchive
import Foundation

/// Unpacks untrusted ZIP and gzip-tar uploads into a scratch directory, refusing anything that could
/// write outside it or exhaust the disk (design §5 step 1).
///
/// Every entry is checked before anything is written for it: relative path without `..`, not a device
/// or FIFO, links whose target stays inside the tree; running totals of entries and bytes are capped,
/// and so is the ratio of unpacked to packed bytes (zip bombs). The first violation stops extraction
/// with an `ArchiveError` naming the entry; the caller deletes the scratch directory.
public struct ArchiveExtractor: Sendable {
    public struct Configuration: Sendable {
        public var maxEntries: Int
        public var maxTotalBytes: Int64
        /// Refuse once unpacked bytes exceed this multiple of the archive's size (checked past `ratioFloor`).
        public var maxCompressionRatio: Double
        /// Below this many unpacked bytes the ratio is not checked (tiny archives compress well legitimately).
        public var ratioFloor: Int64
        /// A result archive (what `kiln verify` reads): regular files and directories only, and every
        /// name once. Tools disagree on which of two same-named entries they keep (tar keeps the last,
        /// `tar --skip-old-files` the first), so a checked tree must be the only tree the archive can give.
        public var filesOnlyEachNameOnce = false

        public init(
            maxEntries: Int = 50_000, maxTotalBytes: Int64 = 2 << 30, maxCompressionRatio: Double = 200,
            ratioFloor: Int64 = 16 << 20
        ) {
            self.maxEntries = maxEntries
            self.maxTotalBytes = maxTotalBytes
            self.maxCompressionRatio = maxCompressionRatio
            self.ratioFloor = ratioFloor
        }
    }

    public struct Summary: Sendable, Equatable {
        public var entries: Int
        public var totalBytes: Int64
        /// Newest entry mtime (seconds since the epoch): SOURCE_DATE_EPOCH for archive uploads.
        public var newestMTime: Int64
        /// Names of the top-level entries (to find a single root directory).
        public var topLevelNames: [String]
    }

    public let configuration: Configuration

    public init(configuration: Configuration = Configuration()) {
        self.configuration = configuration
        ArchiveLocale.ensureUTF8()
    }

    /// Extracts the archive at `archivePath` into the existing directory `destination`.
    public func extract(archivePath: String, into destination: String) throws -> Summary {
        guard let resolved = realpath(destination, nil) else {
            throw ArchiveError(.io, "scratch directory \(destination) does not exist")
        }
        let root = String(cString: resolved)
        free(resolved)
        let archiveSize = Int64((try? FileManager.default.attributesOfItem(atPath: archivePath)[.size] as? Int) ?? 0)

        guard let reader = archive_read_new() else { throw ArchiveError(.io, "libarchive: out of memory") }
        defer { archive_read_free(reader) }
        archive_read_support_format_zip(reader)
        archive_read_support_format_tar(reader)
        archive_read_support_filter_gzip(reader)
        archive_read_support_filter_none(reader)
        guard archive_read_open_filename(reader, archivePath, 64 * 1024) == ARCHIVE_OK else {
            throw ArchiveError(.unreadable, "cannot read the archive: \(Self.errorString(reader)) (expected a ZIP or a gzip-compressed tar)")
        }

        guard let disk = archive_write_disk_new() else { throw ArchiveError(.io, "libarchive: out of memory") }
        defer { archive_write_free(disk) }
        // Second layer behind our own checks.
        archive_write_disk_set_options(disk, ARCHIVE_EXTRACT_TIME | ARCHIVE_EXTRACT_SECURE_NODOTDOT | ARCHIVE_EXTRACT_SECURE_SYMLINKS)

        // One descriptor for the whole extraction: hard-link targets and the final link check read through it.
        let confined = try Self.confine(root)
        var summary = Summary(entries: 0, totalBytes: 0, newestMTime: 0, topLevelNames: [])
        var topLevel = Set<String>()
        var seen = Set<String>()
        var entry: OpaquePointer?
        var buffer = [UInt8](repeating: 0, count: 256 * 1024)
        while true {
            let r = archive_read_next_header(reader, &entry)
            if r == ARCHIVE_EOF { break }
            guard r >= ARCHIVE_WARN, let entry else {
                if summary.entries == 0 {
                    throw ArchiveError(.unreadable, "cannot read the archive: \(Self.errorString(reader)) (expected a ZIP or a gzip-compressed tar)")
                }
                throw ArchiveError(.unreadable, "archive is corrupt after \(summary.entries) entries: \(Self.errorString(reader))")
            }
            guard let rawName = archive_entry_pathname_utf8(entry) ?? archive_entry_pathname(entry) else {
                throw ArchiveError(.unsafePath, "entry \(summary.entries + 1) has no readable path name")
            }
            let name = String(cString: rawName)
            summary.entries += 1
            if summary.entries > configuration.maxEntries {
                throw ArchiveError(.tooManyEntries, "archive has more than \(configuration.maxEntries) entries (limit reached at '\(name)')", entry: name)
            }
            let relative = try Self.safeRelativePath(name)
            if relative.isEmpty { continue }  // "./"
            if let first = relative.split(separator: "/").first { topLevel.insert(String(first)) }
            if configuration.filesOnlyEachNameOnce {
                guard seen.insert(relative).inserted else {
                    throw ArchiveError(.duplicateEntry, "'\(name)' appears more than once in the archive; which copy a tool extracts differs", entry: name)
                }
                let isLink = archive_entry_hardlink(entry) != nil || archive_entry_hardlink_utf8(entry) != nil
                let kind = archive_entry_filetype(entry) & CA_AE_IFMT
                guard !isLink, kind == CA_AE_IFREG || kind == CA_AE_IFDIR else {
                    throw ArchiveError(.notAFile, "'\(name)' is a link or special file; a result archive holds only files and directories", entry: name)
                }
            }

            // Hard links first: libarchive reports them with no file type of their own.
            let isHardLink = archive_entry_hardlink_utf8(entry) != nil || archive_entry_hardlink(entry) != nil
            if isHardLink {
                let target = String(cString: archive_entry_hardlink_utf8(entry) ?? archive_entry_hardlink(entry)!)
                guard let safe = try? Self.safeRelativePath(target), !safe.isEmpty else {
                    throw ArchiveError(.linkEscapes, "hard link '\(name)' points outside the archive ('\(target)')", entry: name)
                }
                // The target must already be a regular file, reached without passing through any link
                // (a hard link to a symlink would re-anchor that link's relative target here).
                let kind: ConfinedDirectory.EntryKind
                do { kind = try confined.kind(of: safe) } catch {
                    throw ArchiveError(.linkEscapes, "hard link '\(name)' points through a link or at nothing ('\(target)')", entry: name)
                }
                guard kind == .file else {
                    throw ArchiveError(.linkEscapes, "hard link '\(name)' must point at a regular file ('\(target)')", entry: name)
                }
                archive_entry_set_hardlink_utf8(entry, root + "/" + safe)
            }
            let type = isHardLink ? CA_AE_IFREG : archive_entry_filetype(entry) & CA_AE_IFMT
            switch type {
            case CA_AE_IFREG, CA_AE_IFDIR:
                break
            case CA_AE_IFLNK:
                let target = archive_entry_symlink_utf8(entry).map { String(cString: $0) } ?? ""
                guard Self.linkStaysInside(target: target, linkPath: relative) else {
                    throw ArchiveError(.linkEscapes, "symlink '\(name)' points outside the archive ('\(target)')", entry: name)
                }
            default:
                throw ArchiveError(.specialFile, "entry '\(name)' is a device, FIFO or socket; only files, directories and links are allowed", entry: name)
            }
            // Declared size: refuse early when it alone would break the limit.
            if archive_entry_size_is_set(entry) != 0 {
                let declared = archive_entry_size(entry)
                if summary.totalBytes + declared > configuration.maxTotalBytes {
                    throw ArchiveError(.tooLarge, "archive unpacks to more than \(configuration.maxTotalBytes) bytes (entry '\(name)' declares \(declared))", entry: name)
                }
            }
            summary.newestMTime = max(summary.newestMTime, Int64(archive_entry_mtime(entry)))
            let target = root + "/" + relative
            archive_entry_set_pathname_utf8(entry, target)
            if type == CA_AE_IFREG && !isHardLink {
                // We count real bytes ourselves; an unset size stops libarchive from extending a
                // refused file to its declared size (a sparse "10 GB" file) when the writer is freed.
                archive_entry_unset_size(entry)
            }
            // Regular permissions only: no setuid/setgid/sticky, owner-writable.
            let perm = archive_entry_perm(entry)
            if type == CA_AE_IFDIR {
                archive_entry_set_perm(entry, 0o755)
            } else if type == CA_AE_IFREG {
                archive_entry_set_perm(entry, (perm & 0o111) != 0 ? 0o755 : 0o644)
            }
            let w = archive_write_header(disk, entry)
            guard w >= ARCHIVE_WARN else {
                throw ArchiveError(.unsafePath, "cannot extract '\(name)': \(Self.errorString(disk))", entry: name)
            }
            if type == CA_AE_IFREG && !isHardLink {
                // A refused entry must not stay behind half-written.
                var completed = false
                defer { if !completed { unlink(target) } }
                while true {
                    let n = buffer.withUnsafeMutableBytes { archive_read_data(reader, $0.baseAddress, $0.count) }
                    if n == 0 { break }
                    guard n > 0 else {
                        throw ArchiveError(.unreadable, "cannot read entry '\(name)': \(Self.errorString(reader))", entry: name)
                    }
                    summary.totalBytes += Int64(n)
                    if summary.totalBytes > configuration.maxTotalBytes {
                        throw ArchiveError(.tooLarge, "archive unpacks to more than \(configuration.maxTotalBytes) bytes (limit reached in '\(name)')", entry: name)
                    }
                    if summary.totalBytes > configuration.ratioFloor {
                        let packed = max(archiveSize, archive_filter_bytes(reader, -1), 1)
                        let ratio = Double(summary.totalBytes) / Double(packed)
                        if ratio > configuration.maxCompressionRatio {
                            throw ArchiveError(
                                .compressionRatio, "archive expands more than \(Int(configuration.maxCompressionRatio))× (a zip bomb?) at entry '\(name)'", entry: name)
                        }
                    }
                    let written = buffer.withUnsafeBytes { archive_write_data(disk, $0.baseAddress, n) }
                    guard written == n else {
                        throw ArchiveError(.io, "cannot write '\(name)': \(Self.errorString(disk))", entry: name)
                    }
                }
                completed = true
            }
            guard archive_write_finish_entry(disk) >= ARCHIVE_WARN else {
                throw ArchiveError(.io, "cannot finish '\(name)': \(Self.errorString(disk))", entry: name)
            }
        }
        guard summary.entries > 0 else { throw ArchiveError(.empty, "the archive is empty") }
        // Lexical checks cannot see what links do together (`x -> .` plus `y -> x/x/../../..`), and
        // entries can come in any order: resolve every link against the finished tree on disk.
        let tree: [(path: String, kind: ConfinedDirectory.EntryKind)]
        do { tree = try confined.walk(maxEntries: configuration.maxEntries * 2) } catch {
            throw ArchiveError(.io, "cannot re-read the extracted tree: \(error)")
        }
        for (path, kind) in tree where kind == .symlink {
            guard Self.resolvesInside(confined, link: path) else {
                throw ArchiveError(.linkEscapes, "symlink '\(path)' resolves outside the archive through other links", entry: path)
            }
        }
        summary.topLevelNames = topLevel.sorted()
        return summary
    }

    /// Normalises an entry name to a relative path inside the tree, or throws.
    static func safeRelativePath(_ name: String) throws -> String {
        if name.hasPrefix("/") || name.hasPrefix("\\") || (name.count > 1 && name.dropFirst().hasPrefix(":")) {
            throw ArchiveError(.unsafePath, "entry '\(name)' has an absolute path", entry: name)
        }
        var parts: [Substring] = []
        for part in name.split(separator: "/", omittingEmptySubsequences: true) {
            if part == "." { continue }
            if part == ".." {
                throw ArchiveError(.unsafePath, "entry '\(name)' contains '..'", entry: name)
            }
            parts.append(part)
        }
        return parts.joined(separator: "/")
    }

    /// A symlink at `linkPath` (relative to the root) with `target`: does it resolve inside the root?
    static func linkStaysInside(target: String, linkPath: String) -> Bool {
        guard !target.isEmpty, !target.hasPrefix("/") else { return false }
        var stack = linkPath.split(separator: "/").dropLast().map(String.init)
        for part in target.split(separator: "/", omittingEmptySubsequences: true) {
            switch part {
            case ".": continue
            case "..":
                if stack.isEmpty { return false }
                stack.removeLast()
            default: stack.append(String(part))
            }
        }
        return true
    }

    static func confine(_ root: String) throws -> ConfinedDirectory {
        do { return try ConfinedDirectory(path: root) } catch {
            throw ArchiveError(.io, "cannot open the scratch directory: \(error)")
        }
    }

    /// Resolves the link at `link` the way the kernel would — following every link met on the way
    /// (at most 40), from the directory each lives in — and says whether it stays beneath the root.
    /// Absolute targets, a `..` above the root, and loops all count as escaping.
    static func resolvesInside(_ root: ConfinedDirectory, link: String, maxHops: Int = 40) -> Bool {
        var resolved = link.split(separator: "/").dropLast().map(String.init)
        guard let first = try? root.linkTarget(link), !first.hasPrefix("/") else { return false }
        var pending = first.split(separator: "/", omittingEmptySubsequences: true).map(String.init)
        var hops = 1
        while !pending.isEmpty {
            let part = pending.removeFirst()
            switch part {
            case ".": continue
            case "..":
                if resolved.isEmpty { return false }
                resolved.removeLast()
            default:
                let candidate = (resolved + [part]).joined(separator: "/")
                if (try? root.kind(of: candidate)) == .symlink {
                    hops += 1
                    guard hops <= maxHops, let target = try? root.linkTarget(candidate), !target.hasPrefix("/") else { return false }
                    pending = target.split(separator: "/", omittingEmptySubsequences: true).map(String.init) + pending
                } else {
                    // A directory, a file, or nothing yet (a dangling link resolves lexically from here).
                    resolved.append(part)
                }
            }
        }
        return true
    }

    static func errorString(_ a: OpaquePointer?) -> String {
        archive_error_string(a).map { String(cString: $0) } ?? "unknown error"
    }
}

/// libarchive needs a UTF-8 locale to handle non-ASCII names (and crashes writing them without one).
enum ArchiveLocale {
    private static let once: Void = { _ = setlocale(LC_ALL, "C.UTF-8") }()
    static func ensureUTF8() { _ = once }
}
