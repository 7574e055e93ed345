import Foundation
import KilnArchive
import KilnTestSupport
import Testing

@Suite struct ArchiveExtractorTests {
    /// Extracts into `dir/scratch` and checks nothing appeared in `dir` outside it.
    func extract(
        _ entries: [ArchiveFixture.Entry], format: ArchiveFixture.Format = .tarGz,
        configuration: ArchiveExtractor.Configuration = .init()
    ) throws -> (Result<ArchiveExtractor.Summary, ArchiveError>, TemporaryDirectory) {
        let dir = try TemporaryDirectory()
        let archive = dir.file(format == .zip ? "upload.zip" : "upload.tar.gz")
        try ArchiveFixture.write(entries, format: format, to: archive)
        try FileManager.default.createDirectory(atPath: dir.file("a/b/scratch"), withIntermediateDirectories: true)
        let result: Result<ArchiveExtractor.Summary, ArchiveError>
        do {
            result = .success(try ArchiveExtractor(configuration: configuration).extract(archivePath: archive, into: dir.file("a/b/scratch")))
        } catch let e as ArchiveError {
            result = .failure(e)
        }
        // Nothing escaped: the only things outside scratch are what we made.
        let outside = try FileManager.default.subpathsOfDirectory(atPath: dir.path).filter { !$0.hasPrefix("a/b/scratch") }
        #expect(Set(outside) == ["a", "a/b", archive.split(separator: "/").last.map(String.init)!], "escaped: \(outside)")
        return (result, dir)
    }

    func refused(
        _ entries: [ArchiveFixture.Entry], format: ArchiveFixture.Format = .tarGz, _ code: ArchiveError.Code,
        containing text: String, configuration: ArchiveExtractor.Configuration = .init()
    ) throws {
        let (result, _) = try extract(entries, format: format, configuration: configuration)
        guard case .failure(let error) = result else {
            Issue.record("expected refusal (\(code))")
            return
        }
        #expect(error.code == code, "\(error)")
        #expect(error.message.contains(text), "\(error.message)")
    }

    @Test func extractsOrdinaryTree() throws {
        for format in [ArchiveFixture.Format.tarGz, .zip] {
            let (result, dir) = try extract(
                [
                    .directory("proj/"), .file("proj/Cargo.toml", Array("[package]\n".utf8)),
                    .file("proj/run.sh", Array("#!/bin/sh\n".utf8), mode: 0o4755), .directory("proj/src/"),
                    .file("proj/src/main.rs", Array("fn main(){}".utf8)), .symlink("proj/link", target: "src/main.rs"),
                    .file("proj/ünïcødé.txt", [1, 2, 3]),
                ], format: format)
            let summary = try result.get()
            #expect(summary.topLevelNames == ["proj"])
            #expect(summary.newestMTime == 1_700_000_000)
            let root = dir.file("a/b/scratch/proj")
            #expect(FileManager.default.contents(atPath: root + "/src/main.rs") == Data("fn main(){}".utf8))
            #expect(FileManager.default.fileExists(atPath: root + "/ünïcødé.txt"))
            let attrs = try FileManager.default.attributesOfItem(atPath: root + "/run.sh")
            #expect((attrs[.posixPermissions] as? Int) == 0o755, "setuid stripped")
        }
    }

    @Test func refusesDotDot() throws {
        try refused([.file("../escape.txt", [1])], .unsafePath, containing: "contains '..'")
        try refused([.file("ok/../../escape.txt", [1])], .unsafePath, containing: "contains '..'")
        try refused([.file("../zip-escape.txt", [1])], format: .zip, .unsafePath, containing: "'..'")
    }

    @Test func refusesAbsolutePaths() throws {
        try refused([.file("/tmp/kiln-abs-escape.txt", [1])], .unsafePath, containing: "absolute path")
        #expect(!FileManager.default.fileExists(atPath: "/tmp/kiln-abs-escape.txt"))
    }

    @Test func refusesSymlinkOutAndFileThroughIt() throws {
        try refused([.symlink("etc", target: "/etc"), .file("etc/kiln-pwned", [1])], .linkEscapes, containing: "symlink 'etc' points outside")
        try refused([.symlink("up", target: "../../.."), .file("up/x", [1])], .linkEscapes, containing: "points outside")
        #expect(!FileManager.default.fileExists(atPath: "/etc/kiln-pwned"))
        // A link inside the tree is fine, but writing through it is not.
        try refused([.directory("d/"), .symlink("l", target: "d"), .file("l/x", [1])], .unsafePath, containing: "cannot extract 'l/x'")
    }

    /// Each link stays inside when read alone; together they climb out (`x -> .`, then a path
    /// through x/x/x that goes up three levels). Order must not matter: the checks run on the tree.
    @Test func refusesLinkChainThatEscapesWhenResolved() throws {
        try refused(
            [.symlink("x", target: "."), .symlink("chain", target: "x/x/x/../../..")],
            .linkEscapes, containing: "symlink 'chain' resolves outside")
        try refused(
            [.symlink("chain", target: "x/x/x/../../.."), .symlink("x", target: ".")],
            .linkEscapes, containing: "symlink 'chain' resolves outside")
        try refused(
            [.directory("d/"), .symlink("d/up", target: ".."), .symlink("c", target: "d/up/d/up/..")],
            .linkEscapes, containing: "resolves outside")
        // Loops are refused too.
        try refused([.symlink("a", target: "b"), .symlink("b", target: "a")], .linkEscapes, containing: "resolves outside")
        // Inside-only chains are fine.
        let (ok, _) = try extract([.directory("d/"), .file("d/f", [1]), .symlink("x", target: "."), .symlink("y", target: "x/x/d/f")])
        _ = try ok.get()
    }

    /// A hard link to a symlink re-anchors that link's relative target at the hard link's place.
    @Test func refusesHardLinkToSymlinkOrThroughLink() throws {
        try refused(
            [.directory("a/"), .directory("a/b/"), .symlink("a/b/l", target: "../.."), .hardlink("l2", target: "a/b/l")],
            .linkEscapes, containing: "hard link 'l2' must point at a regular file")
        try refused(
            [.directory("d/"), .file("d/f", [1]), .symlink("x", target: "d"), .hardlink("h", target: "x/f")],
            .linkEscapes, containing: "hard link 'h' points through a link")
    }

    @Test func hardLinkInsideIsFine() throws {
        let (result, dir) = try extract([.file("a.txt", Array("same".utf8)), .hardlink("b.txt", target: "a.txt")])
        _ = try result.get()
        #expect(FileManager.default.contents(atPath: dir.file("a/b/scratch/b.txt")) == Data("same".utf8))
    }

    @Test func refusesHardLinkOut() throws {
        try refused([.hardlink("hl", target: "../../../etc/hostname")], .linkEscapes, containing: "hard link 'hl' points outside")
        try refused([.hardlink("hl", target: "/etc/hostname")], .linkEscapes, containing: "hard link 'hl'")
    }

    @Test func refusesDevicesAndFifos() throws {
        try refused([.device("null")], .specialFile, containing: "'null' is a device")
        try refused([.fifo("pipe")], .specialFile, containing: "'pipe' is a device, FIFO")
    }

    @Test func refusesTooManyEntries() async throws {
        // 100 000 entries packed and walked: seconds of CPU, kept off the cooperative pool.
        try await offThePool {
            let entries = (0..<100_000).map { ArchiveFixture.Entry.file("f/\($0)", [UInt8(truncatingIfNeeded: $0)]) }
            try self.refused(entries, .tooManyEntries, containing: "more than 50000 entries")
        }
    }

    @Test func refusesTenGigabyteBomb() async throws {
        let dir = try TemporaryDirectory()
        // Compressing 10 GiB of zeros takes seconds of CPU: off the cooperative pool.
        try await offThePool { try ArchiveFixture.bomb(entries: 2, entrySize: 5 << 30, to: dir.file("bomb.tar.gz")) }
        let packed = try FileManager.default.attributesOfItem(atPath: dir.file("bomb.tar.gz"))[.size] as! Int
        #expect(packed < 64 << 20)
        try FileManager.default.createDirectory(atPath: dir.file("s"), withIntermediateDirectories: true)
        // Default limits: the declared size alone is over the 2 GiB cap.
        #expect {
            try ArchiveExtractor().extract(archivePath: dir.file("bomb.tar.gz"), into: dir.file("s"))
        } throws: { ($0 as? ArchiveError)?.code == .tooLarge && ($0 as? ArchiveError)?.entry == "zeros-0.bin" }
        // With a huge size cap, the compression ratio stops it after a few MiB (inflating those is CPU
        // work: off the pool too).
        let lenient = ArchiveExtractor(configuration: .init(maxTotalBytes: 1 << 40))
        let refusal = try await offThePool { () -> ArchiveError.Code? in
            do {
                _ = try lenient.extract(archivePath: dir.file("bomb.tar.gz"), into: dir.file("s"))
                return nil
            } catch { return (error as? ArchiveError)?.code }
        }
        #expect(refusal == .compressionRatio)
        // The refused entry is not left behind (not even as a sparse file of the declared size).
        #expect(!FileManager.default.fileExists(atPath: dir.file("s/zeros-0.bin")))
    }

    @Test func refusesGarbageAndEmpty() throws {
        let dir = try TemporaryDirectory()
        try Data("this is not an archive".utf8).write(to: URL(fileURLWithPath: dir.file("x.zip")))
        #expect { try ArchiveExtractor().extract(archivePath: dir.file("x.zip"), into: dir.path) } throws: {
            ($0 as? ArchiveError)?.code == .unreadable
        }
        try ArchiveFixture.write([], to: dir.file("empty.tar.gz"))
        #expect { try ArchiveExtractor().extract(archivePath: dir.file("empty.tar.gz"), into: dir.path) } throws: {
            ($0 as? ArchiveError)?.code == .empty
        }
    }
}
