import Foundation
import KilnArchive
import KilnTestSupport
import Testing

@testable import KilnWorker

/// What the package phase does with hostile reports and hostile trees (real files and links on disk).
@Suite struct OutputCollectorTests {
    final class Tree {
        let dir: TemporaryDirectory
        let secret: String
        var out: String { dir.file("job/out") }
        var src: String { dir.file("job/src") }
        init() throws {
            dir = try TemporaryDirectory(prefix: "kiln-collect")
            secret = dir.file("farm-key.pem")
            try "PRIVATE KEY".write(toFile: secret, atomically: false, encoding: .utf8)
            for d in ["job/out/target/release", "job/src", "artifacts", "config"] {
                try FileManager.default.createDirectory(atPath: dir.file(d), withIntermediateDirectories: true)
            }
            try "binary".write(toFile: out + "/target/release/app", atomically: false, encoding: .utf8)
            symlink(secret, out + "/target/release/evil-link")
            symlink(secret, src + "/Cargo.lock")
            symlink("..", out + "/up")
            symlink(dir.path, out + "/result")  // an out-link outside the store
            mkfifo(src + "/flake.lock", 0o644)
        }
        func collector() throws -> OutputCollector {
            OutputCollector(
                roots: .init(output: try ConfinedDirectory(path: out), source: try ConfinedDirectory(path: src), nixStore: nil),
                maxFileBytes: 1 << 20, maxFiles: 10)
        }
    }

    func failure(_ body: () throws -> Void) -> BuildFailure? {
        do {
            try body()
            return nil
        } catch { return error as? BuildFailure }
    }

    @Test func aRealArtifactIsCopied() throws {
        let t = try Tree()
        let n = try t.collector().collectArtifacts([.sandboxPath("/build/out/target/release/app", name: "app")], into: t.dir.file("artifacts")) { _ in }
        #expect(n == 1)
        #expect(FileManager.default.contents(atPath: t.dir.file("artifacts/app")) == Data("binary".utf8))
    }

    @Test(arguments: [
        ("/build/out/../../farm-key.pem", "'..'"),
        ("/build/out/target/../../../farm-key.pem", "'..'"),
        ("/build/out/up/farm-key.pem", "symbolic link"),
        ("/build/out/target/release/evil-link", "symbolic link"),
        ("/etc/shadow", "outside /build/out"),
        ("/build/outside/x", "outside /build/out"),
    ])
    func hostileArtifactPathsFailInPackage(path: String, expected: String) throws {
        let t = try Tree()
        let f = failure { _ = try t.collector().collectArtifacts([.sandboxPath(path, name: "evil")], into: t.dir.file("artifacts")) { _ in } }
        #expect(f?.phase == "package", "\(path): \(String(describing: f))")
        #expect(f?.message.contains(expected) == true, "\(path): \(f?.message ?? "")")
        #expect(f?.message.contains("artifact 'evil'") == true)
        #expect(try FileManager.default.contentsOfDirectory(atPath: t.dir.file("artifacts")).isEmpty)
    }

    @Test func buildConfigLinksAndFifosFailInPackage() throws {
        let t = try Tree()
        let lock = failure { _ = try t.collector().collectBuildConfig(["Cargo.lock"], into: t.dir.file("config")) }
        #expect(lock?.phase == "package")
        #expect(lock?.message.contains("build-config file 'Cargo.lock'") == true && lock?.message.contains("symbolic link") == true, "\(lock?.message ?? "")")
        let fifo = failure { _ = try t.collector().collectBuildConfig(["flake.lock"], into: t.dir.file("config")) }
        #expect(fifo?.message.contains("not a regular file") == true, "\(fifo?.message ?? "")")
        #expect(try FileManager.default.contentsOfDirectory(atPath: t.dir.file("config")).isEmpty)
    }

    @Test func nixOutLinkOutsideTheStoreFails() throws {
        let t = try Tree()
        let f = failure { _ = try t.collector().resolve(.nixOutLink("result")) }
        #expect(f?.phase == "package")
        #expect(f?.message.contains("points outside the Nix store") == true, "\(f?.message ?? "")")
        try FileManager.default.removeItem(atPath: t.out + "/result")
        symlink("/nix/store/../../" + t.secret, t.out + "/result")
        let g = failure { _ = try t.collector().resolve(.nixOutLink("result")) }
        #expect(g?.message.contains("'..'") == true, "\(g?.message ?? "")")
    }
}
