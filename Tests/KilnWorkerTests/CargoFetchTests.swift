import Foundation
import KilnAttestation
import KilnMessages
import KilnTestSupport
import Testing

/// #13: the fetch phase against a real sparse-HTTP registry on loopback, with real cargo.
@Suite(.serialized) struct CargoFetchTests {
    static func registry() async throws -> CrateRegistryFixture { try await CrateRegistryFixture.twoCrates() }

    static func app(_ registry: CrateRegistryFixture, checksums: [String: String] = [:]) -> [String: String] {
        registry.appProject(checksums: checksums)
    }

    static func build(
        _ files: [String: String], registry: CrateRegistryFixture, dir: TemporaryDirectory, skipCache: Bool = false
    ) async throws -> (TestDispatcher, BuildEvent) {
        let archive = try await Fixtures.archive(files, root: "app", zip: false)
        let (d, _, terminal, _) = try await runBuild(
            { job in
                var r = BuildRequest(jobID: job, nonce: testNonce, sourceData: Data(archive).base64EncodedString(), sourceName: "app.tar.gz")
                r.skipCache = skipCache
                return r
            }, dir: dir, registry: registry.indexURL)
        return (d, terminal)
    }

    static func fetchNote(_ d: TestDispatcher) -> String { d.logLines.first { $0.contains("[kiln] fetched:") } ?? "no fetch summary in \(d.logLines.suffix(20))" }

    @Test func dependenciesAreFetchedVerifiedCachedAndAPoisonedCacheEntryIsRefetched() async throws {
        let registry = try await Self.registry()
        defer { registry.stop() }
        let dir = try TemporaryDirectory(prefix: "kiln-fetch")
        // Cold: both crates downloaded, the build uses them offline.
        let (cold, coldEnd) = try await Self.build(Self.app(registry), registry: registry, dir: dir)
        #expect(coldEnd.type == .done, "\(coldEnd.message ?? "") \(cold.logLines.suffix(20))")
        #expect(Self.fetchNote(cold).contains("2 crates, 0 from the cache"), "\(Self.fetchNote(cold))")
        // The provenance says where the dependencies came from.
        let unpacked = dir.file("cold-result")
        try FileManager.default.createDirectory(atPath: unpacked, withIntermediateDirectories: true)
        try await Command.run("/bin/tar", ["-xzf", try cold.resultFile(), "-C", unpacked])
        let provenance = try #require(FileManager.default.enumerator(atPath: unpacked)?.compactMap { $0 as? String }.first { $0.hasSuffix("provenance.json") })
        let statement = try String(contentsOfFile: unpacked + "/" + provenance, encoding: .utf8)
        #expect(statement.contains("fetched through the farm's fetch service"), "\(statement.prefix(2000))")
        #expect(statement.contains("pkg:cargo/kiln_leaf@0.1.0"), "the locked crates are resolved dependencies")
        let phases = cold.events.filter { $0.type == .phase }.compactMap(\.name)
        #expect(phases.firstIndex(of: "fetch").map { $0 < phases.firstIndex(of: "build")! } == true, "\(phases)")
        // Warm: both from the cache.
        let (warm, warmEnd) = try await Self.build(Self.app(registry), registry: registry, dir: dir)
        #expect(warmEnd.type == .done)
        #expect(Self.fetchNote(warm).contains("2 crates, 2 from the cache"), "\(Self.fetchNote(warm))")
        // Poisoned: a cache entry swapped for other bytes is detected, evicted and fetched again.
        let leaf = try #require(registry.crates.first { $0.name == "kiln_leaf" })
        try FileManager.default.writeFile(atPath: dir.file("fetch/crates/\(leaf.checksum).crate"), contents: Data("poisoned".utf8))
        let (poisoned, poisonedEnd) = try await Self.build(Self.app(registry), registry: registry, dir: dir)
        #expect(poisonedEnd.type == .done, "\(poisonedEnd.message ?? "")")
        #expect(
            Self.fetchNote(poisoned).contains("1 from the cache") && Self.fetchNote(poisoned).contains("1 corrupt cache entries evicted"), "\(Self.fetchNote(poisoned))")
        let refetched = try Data(contentsOf: URL(fileURLWithPath: dir.file("fetch/crates/\(leaf.checksum).crate")))
        #expect(refetched != Data("poisoned".utf8), "the cache holds the real crate again")
        // skip_cache: everything downloaded although cached.
        let (skipped, _) = try await Self.build(Self.app(registry), registry: registry, dir: dir, skipCache: true)
        #expect(Self.fetchNote(skipped).contains("0 from the cache (0 bytes), 2 downloaded"), "\(Self.fetchNote(skipped))")
    }

    @Test func aCrateTheRegistryDoesNotHaveFailsInFetchNamingIt() async throws {
        let registry = try await Self.registry()
        defer { registry.stop() }
        var files = Self.app(registry)
        files["Cargo.lock"]! +=
            "[[package]]\nname = \"kiln_missing\"\nversion = \"9.9.9\"\nsource = \"registry+https://github.com/rust-lang/crates.io-index\"\nchecksum = \"\(String(repeating: "ab", count: 32))\"\n"
        let (d, end) = try await Self.build(files, registry: registry, dir: try TemporaryDirectory(prefix: "kiln-fetch"))
        #expect(end.type == .failed)
        #expect(end.failurePhase == "fetch", "\(end.failurePhase ?? "") \(end.message ?? "")")
        #expect(end.message?.contains("cannot fetch kiln_missing 9.9.9") == true && end.message?.contains("the registry has no") == true, "\(end.message ?? "")")
        #expect(end.retryable == false, "a 404 will not heal")
        _ = d
    }

    @Test func withoutALockFileTheWorkerResolvesOneFromTheRegistryIndexAndShipsIt() async throws {
        let registry = try await Self.registry()
        defer { registry.stop() }
        var files = Self.app(registry)
        files["Cargo.lock"] = nil
        let dir = try TemporaryDirectory(prefix: "kiln-fetch")
        let (d, end) = try await Self.build(files, registry: registry, dir: dir)
        #expect(end.type == .done, "\(end.message ?? "") \(d.logLines.suffix(25))")
        #expect(d.logLines.contains { $0.contains("Cargo.lock is missing; resolving it against the farm's registry") }, "\(d.logLines.prefix(30))")
        #expect(Self.fetchNote(d).contains("2 crates"), "the generated lock is fetched and verified like a committed one: \(Self.fetchNote(d))")
        let unpacked = dir.file("result")
        try FileManager.default.createDirectory(atPath: unpacked, withIntermediateDirectories: true)
        try await Command.run("/bin/tar", ["-xzf", try d.resultFile(), "-C", unpacked])
        let paths = FileManager.default.enumerator(atPath: unpacked)?.compactMap { $0 as? String } ?? []
        let lockPath = try #require(paths.first { $0.hasSuffix("build-config/Cargo.lock") }, "\(paths)")
        let lock = try String(contentsOfFile: unpacked + "/" + lockPath, encoding: .utf8)
        for c in registry.crates { #expect(lock.contains("name = \"\(c.name)\"") && lock.contains(c.checksum), "\(lock)") }
        let provenance = try #require(paths.first { $0.hasSuffix("provenance.json") })
        let statement = try String(contentsOfFile: unpacked + "/" + provenance, encoding: .utf8)
        #expect(statement.contains("generated by the worker: cargo generate-lockfile against"), "\(statement.prefix(3000))")
    }

    @Test func aDependencyTheRegistryDoesNotHaveFailsResolvingTheLock() async throws {
        let registry = try await Self.registry()
        defer { registry.stop() }
        var files = Self.app(registry)
        files["Cargo.lock"] = nil
        files["Cargo.toml"]! += "kiln_nosuch = \"1\"\n"
        let (d, end) = try await Self.build(files, registry: registry, dir: try TemporaryDirectory(prefix: "kiln-fetch"))
        #expect(end.type == .failed && end.failurePhase == "fetch", "\(end.message ?? "") \(d.logLines.suffix(20))")
        #expect(end.message?.contains("kiln_nosuch") == true, "\(end.message ?? "")")
        #expect(end.retryable == false, "the registry answered: a missing crate will not appear on retry")
    }

    @Test func aLockFileChecksumTheRegistryDoesNotMatchIsRefused() async throws {
        let registry = try await Self.registry()
        defer { registry.stop() }
        let (_, end) = try await Self.build(
            Self.app(registry, checksums: ["kiln_leaf": String(repeating: "cd", count: 32)]), registry: registry, dir: try TemporaryDirectory(prefix: "kiln-fetch"))
        #expect(end.type == .failed && end.failurePhase == "fetch", "\(end.message ?? "")")
        #expect(end.message?.contains("another checksum") == true, "\(end.message ?? "")")
    }

    @Test func aTamperedDownloadIsRefusedBeforeTheBuildSeesIt() async throws {
        let registry = try await Self.registry()
        defer { registry.stop() }
        try registry.tamper("kiln_mid", "0.2.0")
        let (_, end) = try await Self.build(Self.app(registry), registry: registry, dir: try TemporaryDirectory(prefix: "kiln-fetch"))
        #expect(end.type == .failed && end.failurePhase == "fetch", "\(end.message ?? "")")
        #expect(end.message?.contains("does not match the checksum Cargo.lock pins") == true, "\(end.message ?? "")")
    }
}

/// #13: a farm whose mirror is Debian's crate directory builds a real project with its dependencies.
@Suite(.serialized) struct DirectoryMirrorTests {
    static let debianRegistry = "/usr/share/cargo/registry"

    @Test func aProjectWithTwentyDependenciesBuildsFromDebiansCrateDirectory() async throws {
        let files = CrateRegistryFixture.clapAndSerdeProject
        let archive = try await Fixtures.archive(files, root: "debapp", zip: false)
        let (d, _, terminal, dir) = try await runBuild(
            { job in BuildRequest(jobID: job, nonce: testNonce, sourceData: Data(archive).base64EncodedString(), sourceName: "debapp.tar.gz") },
            workerArgs: ["--cargo-vendor", Self.debianRegistry])
        #expect(terminal.type == .done, "\(terminal.message ?? "") \(d.logLines.suffix(25))")
        // The lock file generated offline from the mirror is shipped, and pins 20 or more crates.
        let result = try d.resultFile()
        let unpacked = dir.file("unpacked")
        try FileManager.default.createDirectory(atPath: unpacked, withIntermediateDirectories: true)
        try await Command.run("/bin/tar", ["-xzf", result, "-C", unpacked])
        let lockPath = try #require(FileManager.default.enumerator(atPath: unpacked)?.compactMap { $0 as? String }.first { $0.hasSuffix("Cargo.lock") })
        let lock = try String(contentsOfFile: unpacked + "/" + lockPath, encoding: .utf8)
        let pinned = lock.components(separatedBy: "source = \"registry+").count - 1
        #expect(pinned >= 20, "only \(pinned) registry crates in \(lockPath)")
        #expect(d.logLines.contains { $0.contains("Compiling clap") })
    }
}
