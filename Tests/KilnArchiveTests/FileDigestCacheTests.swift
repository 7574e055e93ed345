import Foundation
import KilnArchive
import KilnTestSupport
import Testing

/// `FileDigestCache`: the toolchain's and the worker's digests remembered across one-shot workers —
/// never a stale digest for a file that changed, never an entry others could have written.
struct FileDigestCacheTests {
    static func write(_ text: String, to path: String) throws {
        try Data(text.utf8).write(to: URL(fileURLWithPath: path))
    }

    @Test func aDigestIsHashedOnceAndThenRemembered() throws {
        let dir = try TemporaryDirectory(prefix: "kiln-digests")
        let file = dir.file("rustc")
        try Self.write(String(repeating: "toolchain ", count: 100_000), to: file)
        let cache = try #require(FileDigestCache(directory: dir.file("cache")))
        let (first, firstSource) = try cache.digest(of: file)
        #expect(first == (try FileDigest.of(file: file)))
        #expect(firstSource == .hashed)
        let (second, secondSource) = try cache.digest(of: file)
        #expect(second == first)
        #expect(secondSource == .cache)
        // Another worker process (a fresh cache value on the same directory) gets it too.
        #expect(try FileDigestCache(directory: dir.file("cache"))!.digest(of: file).1 == .cache)
    }

    /// The directory is bounded: each distinct file identity adds an entry (a rebuilt worker binary
    /// every deploy, say), and without a bound they would pile up for ever. Past `maxEntries` the
    /// oldest half goes; the newest entries still answer.
    @Test func theCacheKeepsAtMostItsEntryLimitAndTheNewestSurvive() throws {
        let dir = try TemporaryDirectory(prefix: "kiln-digests")
        let cache = try #require(FileDigestCache(directory: dir.file("cache"), maxEntries: 4))
        var files: [String] = []
        for i in 0..<10 {
            let file = dir.file("binary-\(i)")
            try Self.write("build \(i)", to: file)
            files.append(file)
            _ = try cache.digest(of: file)
            let entries = try FileManager.default.contentsOfDirectory(atPath: dir.file("cache"))
            #expect(entries.count <= 4, "after \(i + 1) files: \(entries.count) entries")
        }
        #expect(try cache.digest(of: files[9]).1 == .cache, "the newest entry survives eviction")
        #expect(try cache.digest(of: files[0]).1 == .hashed, "the oldest was evicted")
    }

    /// The attack: replace a toolchain binary with one of the same size and put its modification
    /// time back. The change time moves whatever the writer does, so the new bytes are hashed.
    @Test func aFileRewrittenWithItsSizeAndModificationTimeKeptIsHashedAgain() throws {
        let dir = try TemporaryDirectory(prefix: "kiln-digests")
        let file = dir.file("cargo")
        try Self.write("genuine-cargo", to: file)
        var original = stat()
        #expect(stat(file, &original) == 0)
        let cache = try #require(FileDigestCache(directory: dir.file("cache")))
        let genuine = try cache.digest(of: file).0
        try Self.write("trojan-cargo!", to: file)  // same size
        var times = [original.st_atim, original.st_mtim]
        #expect(utimensat(AT_FDCWD, file, &times, 0) == 0)
        var rewritten = stat()
        #expect(stat(file, &rewritten) == 0)
        #expect(rewritten.st_size == original.st_size && rewritten.st_mtim.tv_sec == original.st_mtim.tv_sec)
        #expect(rewritten.st_mtim.tv_nsec == original.st_mtim.tv_nsec)
        let (after, source) = try cache.digest(of: file)
        #expect(source == .hashed)
        #expect(after != genuine)
        #expect(after == (try FileDigest.of(file: file)))
    }

    @Test func anEntryThatDoesNotParseIsIgnoredAndReplaced() throws {
        let dir = try TemporaryDirectory(prefix: "kiln-digests")
        let file = dir.file("nix")
        try Self.write("nix", to: file)
        let cache = try #require(FileDigestCache(directory: dir.file("cache")))
        _ = try cache.digest(of: file)
        let entries = try FileManager.default.contentsOfDirectory(atPath: dir.file("cache"))
        #expect(entries.count == 1)
        for garbage in ["", "zz \n", String(repeating: "0", count: 64) + " -1\n", String(repeating: "a", count: 200)] {
            try Self.write(garbage, to: dir.file("cache/" + entries[0]))
            let (digest, source) = try cache.digest(of: file)
            #expect(source == .hashed, "\(garbage.prefix(20))")
            #expect(digest == (try FileDigest.of(file: file)))
        }
        #expect(try cache.digest(of: file).1 == .cache)
    }

    @Test func aCacheOthersCouldWriteIsNotUsed() throws {
        let dir = try TemporaryDirectory(prefix: "kiln-digests")
        let open = dir.file("open")
        try FileManager.default.createDirectory(atPath: open, withIntermediateDirectories: false)
        #expect(chmod(open, 0o777) == 0)
        #expect(FileDigestCache(directory: open) == nil, "group- and world-writable")
        #expect(chmod(open, 0o720) == 0)
        #expect(FileDigestCache(directory: open) == nil, "group-writable")
        #expect(chmod(open, 0o700) == 0)
        #expect(FileDigestCache(directory: open) != nil)
        if geteuid() == 0 {
            #expect(chown(open, 65534, 65534) == 0)
            #expect(FileDigestCache(directory: open) == nil, "another user's")
        }
        #expect(symlink(dir.file("elsewhere"), dir.file("link")) == 0)
        try FileManager.default.createDirectory(atPath: dir.file("elsewhere"), withIntermediateDirectories: false, attributes: [.posixPermissions: 0o700])
        #expect(FileDigestCache(directory: dir.file("link")) == nil, "a symbolic link")
    }

    /// A VM image's manifest: its word is taken for the files it names, as long as the size on disk
    /// matches (a different file at that path is hashed), with or without a cache directory.
    @Test func aManifestsDigestsAnswerForTheFilesItNames() throws {
        let dir = try TemporaryDirectory(prefix: "kiln-digests")
        let worker = dir.file("kiln-worker")
        try Self.write("worker bytes", to: worker)
        let real = try FileDigest.of(file: worker)
        let listed = String(repeating: "e", count: 64)
        try Self.write("\(listed) \(real.size) \(worker)\n\(listed) 5 /elsewhere/cargo\n", to: dir.file("known"))
        #expect(chmod(dir.file("known"), 0o644) == 0)
        var cache = FileDigestCache()
        try cache.addKnownDigests(fromFile: dir.file("known"))
        let (digest, source) = try cache.digest(of: worker)
        #expect(source == .known)
        #expect(digest == FileDigest(sha256: listed, size: real.size))
        try Self.write("worker bytes, longer", to: worker)
        let (rehashed, again) = try cache.digest(of: worker)
        #expect(again == .hashed)
        #expect(rehashed == (try FileDigest.of(file: worker)))
    }

    @Test func aManifestThatIsNotTheWorkersOwnOrNotWellFormedIsRefused() throws {
        let dir = try TemporaryDirectory(prefix: "kiln-digests")
        let line = String(repeating: "a", count: 64) + " 3 /opt/kiln/bin/kiln-worker\n"
        let refused: [(String, String, mode_t)] = [
            ("group-writable", line, 0o664),
            ("a relative path", String(repeating: "a", count: 64) + " 3 opt/kiln-worker\n", 0o600),
            ("a short digest", "abc 3 /x\n", 0o600),
            ("a negative size", String(repeating: "a", count: 64) + " -3 /x\n", 0o600),
            ("too large", String(repeating: line, count: FileDigestCache.maxManifestBytes / line.utf8.count + 1), 0o600),
        ]
        for (name, text, mode) in refused {
            let file = dir.file(name.replacingOccurrences(of: " ", with: "-"))
            try Self.write(text, to: file)
            #expect(chmod(file, mode) == 0)
            var cache = FileDigestCache()
            #expect(throws: (any Error).self, "\(name)") { try cache.addKnownDigests(fromFile: file) }
            #expect(cache.known.isEmpty, "\(name)")
        }
        #expect(symlink(dir.file("group-writable"), dir.file("link")) == 0)
        var cache = FileDigestCache()
        #expect(throws: (any Error).self) { try cache.addKnownDigests(fromFile: dir.file("link")) }
    }
}
