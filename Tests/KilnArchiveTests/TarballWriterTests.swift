import Foundation
import KilnArchive
import KilnTestSupport
import Testing

@Suite struct TarballWriterTests {
    func makeTree(at root: String, mtime: Date, mode: Int, owner: Int?) throws {
        let fm = FileManager.default
        try fm.createDirectory(atPath: root + "/bin", withIntermediateDirectories: true)
        try fm.createDirectory(atPath: root + "/lib/deep", withIntermediateDirectories: true)
        try fm.writeFile(atPath: root + "/bin/tool", contents: Data(repeating: 0xAB, count: 300_000))
        try fm.writeFile(atPath: root + "/lib/deep/data.txt", contents: Data("hello\n".utf8))
        try fm.writeFile(atPath: root + "/README", contents: Data("readme\n".utf8))
        try fm.writeFile(atPath: root + "/ünï.txt", contents: Data([1, 2, 3]))
        try fm.createSymbolicLink(atPath: root + "/lib/link", withDestinationPath: "deep/data.txt")
        try fm.setAttributes([.posixPermissions: 0o755], ofItemAtPath: root + "/bin/tool")
        for rel in ["README", "lib/deep/data.txt", "ünï.txt"] {
            try fm.setAttributes([.posixPermissions: mode], ofItemAtPath: root + "/" + rel)
        }
        for rel in try fm.subpathsOfDirectory(atPath: root) where rel != "lib/link" {
            try fm.setAttributes([.modificationDate: mtime], ofItemAtPath: root + "/" + rel)
            if let owner { chown(root + "/" + rel, uid_t(owner), gid_t(owner)) }
        }
    }

    @Test func sameInputsSameBytes() throws {
        let dir = try TemporaryDirectory()
        try makeTree(at: dir.file("a"), mtime: Date(timeIntervalSince1970: 1_000_000), mode: 0o644, owner: nil)
        try makeTree(at: dir.file("b"), mtime: Date(timeIntervalSince1970: 1_700_000_000), mode: 0o600, owner: 4242)
        let d1 = try TarballWriter.pack(directory: dir.file("a"), to: dir.file("1.tar.gz"), mtime: 1_690_000_000)
        let d2 = try TarballWriter.pack(directory: dir.file("a"), to: dir.file("2.tar.gz"), mtime: 1_690_000_000)
        let d3 = try TarballWriter.pack(directory: dir.file("b"), to: dir.file("3.tar.gz"), mtime: 1_690_000_000)
        let h = try ["1", "2", "3"].map { try FileDigest.of(file: dir.file("\($0).tar.gz")).sha256 }
        #expect(h[0] == h[1])
        #expect(h[0] == h[2], "different mtimes/owners/modes give the same bytes")
        #expect(d1 == d2 && d1 == d3)
        #expect(d1["bin/tool"]?.size == 300_000)
        #expect(d1["bin/tool"] == (try FileDigest.of(file: dir.file("a/bin/tool"))))
        // A different SOURCE_DATE_EPOCH changes the bytes.
        try TarballWriter.pack(directory: dir.file("a"), to: dir.file("4.tar.gz"), mtime: 1)
        #expect(try FileDigest.of(file: dir.file("4.tar.gz")).sha256 != h[0])
    }

    @Test func headerIsNormalised() async throws {
        let dir = try TemporaryDirectory()
        try makeTree(at: dir.file("a"), mtime: Date(), mode: 0o600, owner: 99)
        try TarballWriter.pack(directory: dir.file("a"), to: dir.file("t.tar.gz"), mtime: 1_690_000_000)
        let bytes = try Data(contentsOf: URL(fileURLWithPath: dir.file("t.tar.gz")))
        #expect(Array(bytes.prefix(10)) == [0x1f, 0x8b, 0x08, 0x00, 0, 0, 0, 0, 0x00, 0x03], "gzip: no name, mtime 0")
        // Round trip through the extractor and check normalised modes.
        try FileManager.default.createDirectory(atPath: dir.file("x"), withIntermediateDirectories: true)
        _ = try ArchiveExtractor().extract(archivePath: dir.file("t.tar.gz"), into: dir.file("x"))
        let tool = try FileManager.default.attributesOfItem(atPath: dir.file("x/bin/tool"))
        let readme = try FileManager.default.attributesOfItem(atPath: dir.file("x/README"))
        #expect(tool[.posixPermissions] as? Int == 0o755)
        #expect(readme[.posixPermissions] as? Int == 0o644)
        #expect((readme[.modificationDate] as? Date)?.timeIntervalSince1970 == 1_690_000_000)
        #expect(try FileManager.default.destinationOfSymbolicLink(atPath: dir.file("x/lib/link")) == "deep/data.txt")
        // Listing via GNU tar: numeric owner 0/0.
        let listing = try await Command.run("/bin/tar", ["--numeric-owner", "-tvzf", dir.file("t.tar.gz")])
        #expect(listing.split(separator: "\n").allSatisfy { $0.contains(" 0/0 ") }, "\(listing)")
    }

    @Test func entriesMustBeSorted() throws {
        let dir = try TemporaryDirectory()
        let w = try TarballWriter(path: dir.file("t.tar.gz"), mtime: 0)
        try w.addFile("b", data: [1])
        #expect(throws: ArchiveError.self) { try w.addFile("a", data: [2]) }
        try w.finish()
    }
}
