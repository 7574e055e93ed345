import CKilnSystem
import Crypto
import Foundation
import KilnCore

/// The one audited way host-side code reads what a build or an upload produced.
///
/// A build controls every name under its scratch tree: any of them may be a symbolic link to the
/// farm's key, a FIFO that blocks the reader, a device, or a path with `..` that climbs out. So the
/// tree is opened once, as a directory descriptor, and every file beneath it is opened relative to
/// that descriptor with `openat2(RESOLVE_BENEATH | RESOLVE_NO_SYMLINKS | RESOLVE_NO_MAGICLINKS)`
/// (or, where the kernel has no `openat2`, one `O_NOFOLLOW` open per path component). No link is
/// ever followed, not even one that stays inside; only regular files are accepted; a size limit holds;
/// and the bytes are read through the descriptor that was checked, never through the path again.
///
/// Defense in depth: with `readAs` set (the build's unprivileged host uid/gid), every open runs
/// with that thread's file-system uid switched to it (`setfsuid`, a per-thread credential), so even
/// a flaw in the resolution above could only open files the build itself could read — never a
/// root-only key.
public final class ConfinedDirectory: Sendable {
    /// Who a confined read acts as.
    public struct Credentials: Sendable, Equatable {
        public var uid: uid_t
        public var gid: gid_t
        public init(uid: uid_t, gid: gid_t) {
            self.uid = uid
            self.gid = gid
        }
    }

    public struct Error: Swift.Error, CustomStringConvertible, Equatable {
        public enum Kind: String, Sendable {
            /// The path is absolute, empty, or has `..` / NUL.
            case invalidPath
            /// A component of the path, or the file itself, is a symbolic link.
            case link
            /// Not a regular file (FIFO, device, socket, directory where a file was expected).
            case notRegularFile
            case notFound
            case tooLarge
            case io
        }
        public var kind: Kind
        /// The path as given (relative to the confined directory).
        public var path: String
        public var detail: String

        public var description: String {
            switch kind {
            case .invalidPath: return "'\(path)' is not a plain relative path (\(detail))"
            case .link: return "'\(path)' is or passes through a symbolic link; links are never followed"
            case .notRegularFile: return "'\(path)' is not a regular file (\(detail))"
            case .notFound: return "'\(path)' does not exist"
            case .tooLarge: return "'\(path)' is larger than the limit (\(detail))"
            case .io: return "cannot read '\(path)': \(detail)"
            }
        }
    }

    /// What a directory entry is, as `lstat` sees it (links are reported, never followed).
    public enum EntryKind: Sendable, Equatable { case file, directory, symlink, other }

    public let path: String
    public let readAs: Credentials?
    let descriptor: Int32

    /// Opens `path` itself with `O_NOFOLLOW`: the root of the confinement must not be a link either.
    /// The path up to the root is the worker's own (its scratch), so it is opened with the worker's
    /// credentials; only what lies beneath is opened as `readAs`.
    public init(path: String, readAs: Credentials? = nil) throws(Error) {
        self.path = path
        self.readAs = readAs
        let fd = open(path, O_RDONLY | O_DIRECTORY | O_NOFOLLOW | O_CLOEXEC)
        guard fd >= 0 else {
            let e = errno
            throw Error(kind: e == ELOOP || e == ENOTDIR ? .link : (e == ENOENT ? .notFound : .io), path: path, detail: String(cString: strerror(e)))
        }
        descriptor = fd
    }

    private init(descriptor: Int32, path: String, readAs: Credentials?) {
        self.descriptor = descriptor
        self.path = path
        self.readAs = readAs
    }

    deinit { close(descriptor) }

    /// Tests force the fallback walk to prove it is as strict as `openat2`. Unsynchronised on
    /// purpose: only a serialized test suite sets it, and either value gives equally strict opens.
    nonisolated(unsafe) static var forceComponentWalk = false

    // MARK: opening

    /// Checks a path from an untrusted source: relative, no `.`/`..`, no NUL, no empty components.
    public static func components(of relative: String) throws(Error) -> [String] {
        if relative.isEmpty { throw Error(kind: .invalidPath, path: relative, detail: "empty") }
        if relative.hasPrefix("/") { throw Error(kind: .invalidPath, path: relative, detail: "absolute") }
        if relative.utf8.contains(0) { throw Error(kind: .invalidPath, path: relative, detail: "contains NUL") }
        var parts: [String] = []
        for part in relative.split(separator: "/", omittingEmptySubsequences: true) {
            if part == "." { continue }
            if part == ".." { throw Error(kind: .invalidPath, path: relative, detail: "contains '..'") }
            parts.append(String(part))
        }
        if parts.isEmpty { throw Error(kind: .invalidPath, path: relative, detail: "names the directory itself") }
        return parts
    }

    /// Opens `relative` beneath this directory with no link traversal. `flags` are added to
    /// `O_RDONLY | O_NOFOLLOW | O_CLOEXEC | O_NONBLOCK | O_NOCTTY` (non-blocking so a FIFO cannot stall us).
    func openBeneath(_ relative: String, directory: Bool) throws(Error) -> Int32 {
        let parts = try Self.components(of: relative)
        var flags = O_RDONLY | O_NOFOLLOW | O_CLOEXEC | O_NONBLOCK | O_NOCTTY
        if directory { flags |= O_DIRECTORY }
        let joined = parts.joined(separator: "/")
        let fd: Int32 = Self.withCredentials(readAs) {
            if !Self.forceComponentWalk {
                let r = kiln_openat2_beneath(descriptor, joined, flags, 0, 0)
                if r >= 0 || errno != ENOSYS { return r }
            }
            return Self.walk(from: descriptor, parts, flags: flags)
        }
        guard fd >= 0 else {
            let e = errno
            switch e {
            case ELOOP, EXDEV: throw Error(kind: .link, path: relative, detail: String(cString: strerror(e)))
            case ENOENT: throw Error(kind: .notFound, path: relative, detail: "")
            case ENOTDIR:
                // A link where a directory was expected reports ENOTDIR with O_NOFOLLOW|O_DIRECTORY.
                if (try? kind(of: relative)) == .symlink { throw Error(kind: .link, path: relative, detail: "") }
                throw Error(kind: directory ? .notRegularFile : .notFound, path: relative, detail: "a component is not a directory")
            case ENXIO, EWOULDBLOCK: throw Error(kind: .notRegularFile, path: relative, detail: "a FIFO or socket")
            default: throw Error(kind: .io, path: relative, detail: String(cString: strerror(e)))
            }
        }
        return fd
    }

    /// The fallback: one `openat(O_NOFOLLOW)` per component, each directory opened from the previous
    /// descriptor, so no link anywhere on the path is followed.
    static func walk(from root: Int32, _ parts: [String], flags: Int32) -> Int32 {
        var current = root
        for (i, part) in parts.enumerated() {
            let last = i == parts.count - 1
            let f = last ? flags : (O_RDONLY | O_DIRECTORY | O_NOFOLLOW | O_CLOEXEC)
            let next = openat(current, part, f)
            var saved = errno
            if next < 0, saved == ENOTDIR || saved == ELOOP {
                // O_NOFOLLOW|O_DIRECTORY on a link reports ENOTDIR: say it was a link, as openat2 does.
                var st = stat()
                if fstatat(current, part, &st, AT_SYMLINK_NOFOLLOW) == 0, (st.st_mode & S_IFMT) == S_IFLNK { saved = ELOOP }
            }
            if current != root { close(current) }
            guard next >= 0 else {
                errno = saved
                return -1
            }
            current = next
        }
        return current
    }

    /// Opens a regular file no larger than `maxBytes`.
    public func openFile(_ relative: String, maxBytes: Int64 = .max) throws(Error) -> ConfinedFile {
        let fd = try openBeneath(relative, directory: false)
        var st = stat()
        guard fstat(fd, &st) == 0 else {
            close(fd)
            throw Error(kind: .io, path: relative, detail: String(cString: strerror(errno)))
        }
        guard (st.st_mode & S_IFMT) == S_IFREG else {
            close(fd)
            throw Error(kind: .notRegularFile, path: relative, detail: Self.describe(mode: st.st_mode))
        }
        guard Int64(st.st_size) <= maxBytes else {
            close(fd)
            throw Error(kind: .tooLarge, path: relative, detail: "\(st.st_size) bytes, limit \(maxBytes)")
        }
        // Back to blocking reads now that we know it is a regular file.
        _ = fcntl(fd, F_SETFL, fcntl(fd, F_GETFL) & ~O_NONBLOCK)
        return ConfinedFile(descriptor: fd, path: relative, size: Int64(st.st_size), mode: st.st_mode, maxBytes: maxBytes)
    }

    /// A subdirectory, confined the same way (its descriptor was opened without following links).
    public func subdirectory(_ relative: String) throws(Error) -> ConfinedDirectory {
        let fd = try openBeneath(relative, directory: true)
        return ConfinedDirectory(descriptor: fd, path: path + "/" + relative, readAs: readAs)
    }

    /// What `relative` is, without following a link at its end (components before it are opened no-follow).
    public func kind(of relative: String) throws(Error) -> EntryKind {
        let parts = try Self.components(of: relative)
        let parentFD: Int32
        if parts.count > 1 {
            parentFD = try openBeneath(parts.dropLast().joined(separator: "/"), directory: true)
        } else {
            parentFD = dup(descriptor)
        }
        defer { close(parentFD) }
        var st = stat()
        let r = Self.withCredentials(readAs) { fstatat(parentFD, parts.last!, &st, AT_SYMLINK_NOFOLLOW) }
        guard r == 0 else {
            throw Error(kind: errno == ENOENT ? .notFound : .io, path: relative, detail: String(cString: strerror(errno)))
        }
        return Self.kind(mode: st.st_mode)
    }

    /// The text of the link at `relative` (the link itself is read, never followed).
    public func linkTarget(_ relative: String) throws(Error) -> String {
        let parts = try Self.components(of: relative)
        let parentFD = parts.count > 1 ? try openBeneath(parts.dropLast().joined(separator: "/"), directory: true) : dup(descriptor)
        defer { close(parentFD) }
        var buffer = [CChar](repeating: 0, count: 4097)
        let n = Self.withCredentials(readAs) { readlinkat(parentFD, parts.last!, &buffer, 4096) }
        guard n >= 0 else {
            throw Error(
                kind: errno == ENOENT ? .notFound : (errno == EINVAL ? .notRegularFile : .io), path: relative,
                detail: errno == EINVAL ? "not a symbolic link" : String(cString: strerror(errno)))
        }
        return String(decoding: buffer[0..<n].map { UInt8(bitPattern: $0) }, as: UTF8.self)
    }

    /// The names in this directory with what each is (`lstat`), sorted bytewise.
    public func entries() throws(Error) -> [(name: String, kind: EntryKind)] {
        let fd = dup(descriptor)
        guard fd >= 0, let dir = fdopendir(fd) else {
            if fd >= 0 { close(fd) }
            throw Error(kind: .io, path: path, detail: String(cString: strerror(errno)))
        }
        defer { closedir(dir) }
        rewinddir(dir)
        var out: [(String, EntryKind)] = []
        while let ent = readdir(dir) {
            let name = withUnsafeBytes(of: ent.pointee.d_name) { raw in
                String(decoding: raw.prefix { $0 != 0 }, as: UTF8.self)
            }
            if name == "." || name == ".." { continue }
            var st = stat()
            guard fstatat(descriptor, name, &st, AT_SYMLINK_NOFOLLOW) == 0 else { continue }
            out.append((name, Self.kind(mode: st.st_mode)))
        }
        return out.sorted { Array($0.0.utf8).lexicographicallyPrecedes(Array($1.0.utf8)) }
    }

    /// Every entry beneath this directory, depth first, paths relative to it; links are reported as
    /// links and never entered. At most `maxEntries` (a build could make millions).
    public func walk(maxEntries: Int = 100_000) throws(Error) -> [(path: String, kind: EntryKind)] {
        var out: [(String, EntryKind)] = []
        func visit(_ dir: ConfinedDirectory, prefix: String) throws(Error) {
            for (name, kind) in try dir.entries() {
                let rel = prefix.isEmpty ? name : prefix + "/" + name
                out.append((rel, kind))
                if out.count > maxEntries { throw Error(kind: .tooLarge, path: rel, detail: "more than \(maxEntries) entries") }
                if kind == .directory { try visit(try dir.subdirectory(name), prefix: rel) }
            }
        }
        try visit(self, prefix: "")
        return out
    }

    /// Changes the owner of this directory and everything beneath it (links themselves, never their
    /// targets). Used before a build, to hand the tree to the build's unprivileged uid.
    public func changeOwner(to owner: Credentials) throws(Error) {
        guard fchown(descriptor, owner.uid, owner.gid) == 0 else {
            throw Error(kind: .io, path: path, detail: "chown: \(String(cString: strerror(errno)))")
        }
        for (name, kind) in try entries() {
            if kind == .directory {
                try subdirectory(name).changeOwner(to: owner)
            } else if fchownat(descriptor, name, owner.uid, owner.gid, AT_SYMLINK_NOFOLLOW) != 0 {
                throw Error(kind: .io, path: path + "/" + name, detail: "chown: \(String(cString: strerror(errno)))")
            }
        }
    }

    // MARK: helpers

    static func kind(mode: mode_t) -> EntryKind {
        switch mode & S_IFMT {
        case S_IFREG: return .file
        case S_IFDIR: return .directory
        case S_IFLNK: return .symlink
        default: return .other
        }
    }

    static func describe(mode: mode_t) -> String {
        switch mode & S_IFMT {
        case S_IFDIR: return "a directory"
        case S_IFIFO: return "a FIFO"
        case S_IFSOCK: return "a socket"
        case S_IFCHR: return "a character device"
        case S_IFBLK: return "a block device"
        case S_IFLNK: return "a symbolic link"
        default: return "an unknown kind of file"
        }
    }

    /// Runs `body` with this thread's fsuid/fsgid switched to `credentials` (only when we are root and
    /// they differ). No suspension point can occur inside: `body` is synchronous.
    static func withCredentials<T>(_ credentials: Credentials?, _ body: () -> T) -> T {
        guard let credentials, geteuid() == 0, credentials.uid != 0 else { return body() }
        let oldGID = kiln_setfsgid(credentials.gid)
        let oldUID = kiln_setfsuid(credentials.uid)
        let saved: Int32
        let result = body()
        saved = errno
        _ = kiln_setfsuid(uid_t(oldUID))
        _ = kiln_setfsgid(gid_t(oldGID))
        errno = saved
        return result
    }
}

/// A regular file opened by `ConfinedDirectory`: all reads go through this descriptor.
public final class ConfinedFile {
    public let path: String
    public let size: Int64
    public let mode: mode_t
    public let maxBytes: Int64
    let descriptor: Int32

    init(descriptor: Int32, path: String, size: Int64, mode: mode_t, maxBytes: Int64) {
        self.descriptor = descriptor
        self.path = path
        self.size = size
        self.mode = mode
        self.maxBytes = maxBytes
    }

    deinit { close(descriptor) }

    public var isExecutable: Bool { (mode & 0o111) != 0 }

    /// Reads to the end in `chunk`-sized pieces; fails if the file grows past `maxBytes` while read.
    public func forEachChunk(_ chunk: Int = 1 << 20, _ body: (UnsafeRawBufferPointer) throws -> Void) throws {
        var buffer = [UInt8](repeating: 0, count: chunk)
        var total: Int64 = 0
        while true {
            let n = buffer.withUnsafeMutableBytes { read(descriptor, $0.baseAddress, chunk) }
            if n < 0 {
                if errno == EINTR { continue }
                throw ConfinedDirectory.Error(kind: .io, path: path, detail: String(cString: strerror(errno)))
            }
            if n == 0 { return }
            total += Int64(n)
            if total > maxBytes { throw ConfinedDirectory.Error(kind: .tooLarge, path: path, detail: "grew past \(maxBytes) bytes while read") }
            try buffer.withUnsafeBytes { try body(UnsafeRawBufferPointer(rebasing: $0[0..<n])) }
        }
    }

    public func readAll() throws -> [UInt8] {
        var out: [UInt8] = []
        out.reserveCapacity(Int(min(size, 64 << 20)))
        try forEachChunk { out.append(contentsOf: $0) }
        return out
    }

    /// Copies the bytes to a new file at `destination` (created exclusively, 0755 or 0644 after the
    /// source's executable bit) and returns their digest, computed from the same bytes that were written.
    @discardableResult
    public func copy(to destination: String) throws -> FileDigest {
        let out = open(destination, O_WRONLY | O_CREAT | O_EXCL | O_CLOEXEC | O_NOFOLLOW, isExecutable ? 0o755 : 0o644)
        guard out >= 0 else { throw ConfinedDirectory.Error(kind: .io, path: destination, detail: String(cString: strerror(errno))) }
        defer { close(out) }
        var hasher = SHA256()
        var size: Int64 = 0
        try forEachChunk { bytes in
            hasher.update(bufferPointer: bytes)
            size += Int64(bytes.count)
            var offset = 0
            while offset < bytes.count {
                let w = write(out, bytes.baseAddress! + offset, bytes.count - offset)
                if w < 0 {
                    if errno == EINTR { continue }
                    throw ConfinedDirectory.Error(kind: .io, path: destination, detail: String(cString: strerror(errno)))
                }
                offset += w
            }
        }
        return FileDigest(sha256: hasher.finalize().hexString, size: size)
    }
}
