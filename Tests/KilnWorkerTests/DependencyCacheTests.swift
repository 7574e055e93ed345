import Foundation
import KilnArchive
import KilnAttestation
import KilnMessages
import KilnTestSupport
import Testing

/// #31 item 3: the farm's signed compiled-dependency cache, end to end — real cargo, a real sparse
/// registry of Debian's crates, kiln-fetch keeping the entries, one-shot workers building.
@Suite(.serialized) struct DependencyCacheTests {
    struct Built {
        var dispatcher: TestDispatcher
        var end: BuildEvent
        var artifact: String
        var provenance: String
        var log: [String]
    }

    static func build(
        _ files: [String: String], registry: CrateRegistryFixture, dir: TemporaryDirectory, skipCache: Bool = false, workerArgs: [String] = [],
        expectDone: Bool = true
    ) async throws -> Built {
        let archive = try await Fixtures.archive(files, root: "debapp", zip: false)
        let (d, _, end, _) = try await runBuild(
            { job in
                var r = BuildRequest(jobID: job, nonce: testNonce, sourceData: Data(archive).base64EncodedString(), sourceName: "debapp.tar.gz")
                r.skipCache = skipCache
                return r
            }, workerArgs: workerArgs, dir: dir, registry: registry.indexURL)
        if expectDone { #expect(end.type == .done, "\(end.message ?? "") \(d.logLines.suffix(30))") }
        guard end.type == .done else { return Built(dispatcher: d, end: end, artifact: "", provenance: "", log: d.logLines) }
        let unpacked = dir.file("result-\(UUID().uuidString)")
        try FileManager.default.createDirectory(atPath: unpacked, withIntermediateDirectories: true)
        _ = try ArchiveExtractor().extract(archivePath: try d.resultFile(), into: unpacked)
        let artifact = try FileDigest.of(file: unpacked + "/artifacts/debapp").sha256
        let provenance = try String(contentsOfFile: unpacked + "/provenance.json", encoding: .utf8)
        return Built(dispatcher: d, end: end, artifact: artifact, provenance: provenance, log: d.logLines)
    }

    /// The provenance's `dependency_cache` parameter (nil: the worker did not look).
    static func cacheParameter(_ b: Built) throws -> String? {
        try CanonicalJSON.decode(Statement.self, from: Array(b.provenance.utf8)).predicate.buildDefinition.internalParameters["dependency_cache"]
    }

    static func cacheNote(_ b: Built) -> String {
        b.log.first { $0.contains("[kiln] compiled dependencies:") && !$0.contains("none in the farm's cache") } ?? "none in \(b.log.suffix(30))"
    }

    /// The entry's key, from the provenance's `kiln:dependency-cache/<key>` dependency.
    static func entryKey(_ b: Built) throws -> String {
        let statement = try CanonicalJSON.decode(Statement.self, from: Array(b.provenance.utf8))
        let entry = try #require(statement.predicate.buildDefinition.resolvedDependencies.first { $0.uri?.hasPrefix("kiln:dependency-cache/") == true })
        return String(entry.uri!.dropFirst("kiln:dependency-cache/".count))
    }

    @Test func aRebuildTakesTheSignedEntryAndTheArtifactIsByteIdenticalWithAndWithoutIt() async throws {
        let registry = try await CrateRegistryFixture.debian()
        defer { registry.stop() }
        let dir = try TemporaryDirectory(prefix: "kiln-depcache")
        let files = CrateRegistryFixture.clapAndSerdeProject

        // Cold: a dependency-only step compiles the registry crates; the entry is stored, signed.
        let cold = try await Self.build(files, registry: registry, dir: dir)
        #expect(Self.cacheNote(cold).contains("stored in the farm's cache"), "\(Self.cacheNote(cold))")
        let coldParameter = try Self.cacheParameter(cold) ?? "none"
        #expect(coldParameter.hasPrefix("miss:"), "\(coldParameter)")
        let key = try Self.entryKey(cold)
        let entry = dir.file("fetch/dependencies/entries/\(key)")
        #expect(FileManager.default.fileExists(atPath: entry + "/archive"), "the fetch service keeps the entry")

        // Warm: a fresh worker takes the entry; only the project's own crate is compiled.
        let warm = try await Self.build(files, registry: registry, dir: dir)
        #expect(Self.cacheNote(warm).contains("from the farm's cache"), "\(Self.cacheNote(warm))")
        let warmParameter = try Self.cacheParameter(warm) ?? "none"
        #expect(warmParameter.hasPrefix("hit:"), "\(warmParameter)")
        #expect(try Self.entryKey(warm) == key)
        #expect(!warm.log.contains { $0.contains("Compiling clap") }, "a hit compiles no dependency: \(warm.log.filter { $0.contains("Compiling") })")
        #expect(warm.log.contains { $0.contains("Compiling debapp") })
        #expect(warm.artifact == cold.artifact, "the same bytes from the cache as from the dependency-only step")

        // skip_cache: neither used nor stored, and the same bytes again.
        let skipped = try await Self.build(files, registry: registry, dir: dir, skipCache: true)
        #expect(try Self.cacheParameter(skipped) == "skipped (skip_cache)")
        #expect(skipped.log.contains { $0.contains("Compiling clap") })
        #expect(skipped.artifact == cold.artifact, "byte-identical without the cache")

        // The worker's bound on an entry: past it the step's units are not packed, the build compiles
        // everything itself and stores nothing.
        let bounded = try await Self.build(files, registry: registry, dir: dir, skipCache: false, workerArgs: ["--max-dependency-entry-mb", "1"])
        #expect(bounded.log.contains { $0.contains("compiled dependencies: the farm's entry was refused (the entry is larger than this worker takes)") })
        #expect(bounded.log.contains { $0.contains("not used (the compiled dependencies exceed 1 MiB)") }, "\(bounded.log.filter { $0.contains("[kiln]") })")
        #expect(bounded.artifact == cold.artifact)

        // --dependency-cache off: the worker does not look.
        let off = try await Self.build(files, registry: registry, dir: dir, workerArgs: ["--dependency-cache", "off"])
        #expect(try Self.cacheParameter(off) == nil)
        #expect(off.artifact == cold.artifact)
    }

    @Test func anEntryNotSignedByTheFarmOrNotMatchingItsSealIsRefusedAndTheBuildCompilesItsOwn() async throws {
        let registry = try await CrateRegistryFixture.debian()
        defer { registry.stop() }
        let dir = try TemporaryDirectory(prefix: "kiln-depcache")
        let files = CrateRegistryFixture.clapAndSerdeProject
        let cold = try await Self.build(files, registry: registry, dir: dir)
        let key = try Self.entryKey(cold)
        let entry = dir.file("fetch/dependencies/entries/\(key)")
        let genuineSeal = try JSONDecoder().decode(DependencyCacheSeal.self, from: Data(contentsOf: URL(fileURLWithPath: entry + "/seal")))
        let genuine = try CanonicalJSON.decode(DependencyCacheStatement.self, from: try genuineSeal.statement.payloadBytes())

        // The attack: whoever can write the fetch service's store (or answer in its place) swaps in
        // compiled code of its own, sealed with a key of its own for exactly this key.
        let poison = dir.file("poison")
        try FileManager.default.createDirectory(atPath: poison, withIntermediateDirectories: true)
        try await Command.run("/bin/tar", ["-xzf", entry + "/archive", "-C", poison])
        let rlibs = try FileManager.default.contentsOfDirectory(atPath: poison + "/release/deps").filter { $0.hasPrefix("libserde_json-") && $0.hasSuffix(".rlib") }
        #expect(!rlibs.isEmpty, "the entry holds serde_json's compiled library")
        for rlib in rlibs { try Data("the attacker's code".utf8).write(to: URL(fileURLWithPath: poison + "/release/deps/" + rlib)) }
        try await Command.run("/bin/tar", ["-czf", entry + "/archive", "-C", poison, "."])
        let poisoned = try FileDigest.of(file: entry + "/archive")
        var forged = genuine
        forged.archiveSha256 = poisoned.sha256
        forged.archiveSize = poisoned.size
        let attacker = SigningKey()
        let forgedSeal = try DependencyCacheSeal.seal(forged, key: attacker, certificate: nil)
        try JSONEncoder().encode(forgedSeal).write(to: URL(fileURLWithPath: entry + "/seal"))
        // The control: a worker told to trust the attacker's key links the attacker's file.
        try attacker.write(to: dir.file("attacker.pem"))
        let trusting = try await Self.build(files, registry: registry, dir: dir, workerArgs: ["--dependency-cache-trust", dir.file("attacker.pem")], expectDone: false)
        #expect(trusting.log.contains { $0.contains("from the farm's cache") }, "\(trusting.log.filter { $0.contains("[kiln]") })")
        #expect(trusting.end.type == .failed, "the poisoned library reached the compiler: \(trusting.end.message ?? "")")
        let refused = try await Self.build(files, registry: registry, dir: dir)
        #expect(
            refused.log.contains { $0.contains("the farm's entry was refused") && $0.contains("which this farm does not trust") },
            "\(refused.log.filter { $0.contains("[kiln]") })")
        #expect(refused.log.contains { $0.contains("Compiling clap") }, "the build compiled its dependencies itself")
        #expect(refused.artifact == cold.artifact)

        // The genuine seal over other bytes: the archive does not match its signed digest.
        try JSONEncoder().encode(genuineSeal).write(to: URL(fileURLWithPath: entry + "/seal"))
        let mismatched = try await Self.build(files, registry: registry, dir: dir)
        #expect(
            mismatched.log.contains { $0.contains("the farm's entry was refused") && $0.contains("does not match its signed digest") },
            "\(mismatched.log.filter { $0.contains("[kiln]") })")
        #expect(mismatched.artifact == cold.artifact)
    }
}
