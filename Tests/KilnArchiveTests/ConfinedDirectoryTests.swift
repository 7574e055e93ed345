import Foundation
import KilnTestSupport
import Testing

@testable import KilnArchive

/// Every way a hostile tree can point a host-side read elsewhere, tried against the one primitive,
/// once with `openat2` and once with the per-component fallback walk.
@Suite(.serialized) struct ConfinedDirectoryTests {
    /// A tree with a secret outside it and the usual traps inside.
    final class Hostile {
        let outside: TemporaryDirectory
        let tree: TemporaryDirectory
        var secret: String { outside.file("secret.pem") }
        init() throws {
            outside = try TemporaryDirectory(prefix: "kiln-outside")
            tree = try TemporaryDirectory(prefix: "kiln-tree")
            try "PRIVATE KEY".write(toFile: secret, atomically: false, encoding: .utf8)
            let t = tree.path
            try FileManager.default.createDirectory(atPath: t + "/out/target/release", withIntermediateDirectories: true)
            try "real binary".write(toFile: t + "/out/target/release/app", atomically: false, encoding: .utf8)
            try "lock".write(toFile: t + "/Cargo.lock.real", atomically: false, encoding: .utf8)
            symlink(secret, t + "/Cargo.lock")  // a link to a host file
            symlink("Cargo.lock.real", t + "/inside-link")  // a link that stays inside
            symlink(outside.path, t + "/dirlink")  // a directory link out
            symlink(".", t + "/x")  // x -> .
            symlink("x/x/x/../../../../", t + "/chain")  // escapes when resolved
            mkfifo(t + "/fifo", 0o644)
            symlink("/dev/zero", t + "/zero")
        }
    }

    static let walks = [false, true]

    @Test(arguments: walks) func regularFileIsReadThroughItsDescriptor(fallback: Bool) throws {
        ConfinedDirectory.forceComponentWalk = fallback
        defer { ConfinedDirectory.forceComponentWalk = false }
        let h = try Hostile()
        let root = try ConfinedDirectory(path: h.tree.path)
        let f = try root.openFile("out/target/release/app")
        #expect(String(decoding: try f.readAll(), as: UTF8.self) == "real binary")
        #expect(try root.openFile("./out//target/release/app").size == 11)
    }

    @Test(arguments: walks) func linksAreNeverFollowed(fallback: Bool) throws {
        ConfinedDirectory.forceComponentWalk = fallback
        defer { ConfinedDirectory.forceComponentWalk = false }
        let h = try Hostile()
        let root = try ConfinedDirectory(path: h.tree.path)
        for path in ["Cargo.lock", "inside-link", "dirlink/secret.pem", "x/Cargo.lock.real", "chain/secret.pem", "zero"] {
            #expect(throws: ConfinedDirectory.Error.self, "\(path)") { try root.openFile(path) }
            do { _ = try root.openFile(path) } catch {
                #expect(error.kind == .link, "\(path): \(error)")
            }
        }
        #expect((try? root.subdirectory("dirlink")) == nil)
        #expect((try? root.subdirectory("x")) == nil)
    }

    @Test(arguments: walks) func dotDotAndAbsolutePathsAreRefused(fallback: Bool) throws {
        ConfinedDirectory.forceComponentWalk = fallback
        defer { ConfinedDirectory.forceComponentWalk = false }
        let h = try Hostile()
        let root = try ConfinedDirectory(path: h.tree.path + "/out")
        for path in ["../Cargo.lock.real", "target/../../Cargo.lock.real", h.secret, "", ".", "a\0b"] {
            do {
                _ = try root.openFile(path)
                Issue.record("'\(path)' was opened")
            } catch {
                #expect(error.kind == .invalidPath, "\(path): \(error)")
            }
        }
    }

    @Test(arguments: walks) func fifosAndDirectoriesAreNotFiles(fallback: Bool) throws {
        ConfinedDirectory.forceComponentWalk = fallback
        defer { ConfinedDirectory.forceComponentWalk = false }
        let h = try Hostile()
        let root = try ConfinedDirectory(path: h.tree.path)
        // Opening a FIFO with no writer must not block, and must be refused.
        do {
            _ = try root.openFile("fifo")
            Issue.record("FIFO opened")
        } catch { #expect(error.kind == .notRegularFile) }
        do {
            _ = try root.openFile("out")
            Issue.record("directory opened")
        } catch { #expect(error.kind == .notRegularFile) }
    }

    @Test func sizeLimitHoldsAtOpenAndWhileReading() throws {
        let h = try Hostile()
        let root = try ConfinedDirectory(path: h.tree.path)
        do {
            _ = try root.openFile("out/target/release/app", maxBytes: 5)
            Issue.record("over-limit file opened")
        } catch {
            #expect(error.kind == .tooLarge)
        }
    }

    @Test func theRootItselfMustNotBeALink() throws {
        let h = try Hostile()
        #expect(throws: ConfinedDirectory.Error.self) { try ConfinedDirectory(path: h.tree.path + "/dirlink") }
    }

    @Test func walkReportsLinksWithoutEnteringThem() throws {
        let h = try Hostile()
        let entries = try ConfinedDirectory(path: h.tree.path).walk()
        let byPath = Dictionary(uniqueKeysWithValues: entries.map { ($0.path, $0.kind) })
        #expect(byPath["dirlink"] == .symlink)
        #expect(byPath["x"] == .symlink)
        #expect(byPath["fifo"] == .other)
        #expect(byPath["out/target/release/app"] == .file)
        #expect(!byPath.keys.contains { $0.hasPrefix("dirlink/") || $0.hasPrefix("x/") })
    }

    @Test func copyWritesTheBytesItHashes() throws {
        let h = try Hostile()
        let root = try ConfinedDirectory(path: h.tree.path)
        let dest = h.outside.file("copy")
        let digest = try root.openFile("out/target/release/app").copy(to: dest)
        #expect(digest == FileDigest.of(bytes: Array("real binary".utf8)))
        #expect(FileManager.default.contents(atPath: dest) == Data("real binary".utf8))
        // Never overwrites (or follows a link placed at) the destination.
        #expect(throws: (any Error).self) { try root.openFile("out/target/release/app").copy(to: dest) }
    }

    /// Defense in depth: even a read the resolution would allow is refused when the file is not
    /// readable by the build's uid (a root-only key hard-linked or bind-mounted into the tree).
    @Test func readsActAsTheBuildUser() throws {
        guard geteuid() == 0 else { return }
        let h = try Hostile()
        let key = h.tree.file("root-only.pem")
        try "PRIVATE KEY".write(toFile: key, atomically: false, encoding: .utf8)
        chmod(key, 0o600)
        chmod(h.tree.path, 0o755)  // only the file's own mode stands in the way
        let asRoot = try ConfinedDirectory(path: h.tree.path)
        #expect(try asRoot.openFile("root-only.pem").size == 11)
        let asBuild = try ConfinedDirectory(path: h.tree.path, readAs: .init(uid: 64_999, gid: 64_999))
        do {
            _ = try asBuild.openFile("root-only.pem")
            Issue.record("a root-only file was read as the build user")
        } catch {
            #expect(error.kind == .io, "\(error)")
        }
        // And the thread's own credentials are restored afterwards.
        #expect(FileManager.default.contents(atPath: key) != nil)
    }
}

/// Kernel-generated files report size 0; they must still be read whole.
@Suite struct KernelFileTests {
    @Test func procFilesLargerThanAPageAreReadWhole() async throws {
        let maps = try #require(KernelFile.read("/proc/self/maps"))
        let count = try await Command.run("/bin/sh", ["-c", "wc -c < /proc/\(getpid())/maps"])
        let expected = Int(count.trimmingCharacters(in: .whitespacesAndNewlines)) ?? 0
        #expect(expected > 8192, "this test needs a maps file over two pages")
        // The process's maps can change a little between the two reads; a one-page read would be far off.
        #expect(abs(maps.count - expected) < 2048, "read \(maps.count) of \(expected) bytes")
        #expect(
            FileManager.default.contents(atPath: "/proc/self/maps").map { $0.count < expected - 2048 } ?? true,
            "Foundation's one-page read is what this guards against")
    }
}
