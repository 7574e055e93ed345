import Foundation
import KilnArchive
import KilnAttestation
import KilnCore
import KilnTestSupport
import Testing

@testable import KilnWorker

/// What the worker writes into provenance is a fact or absent, never a placeholder.
@Suite struct ProvenanceFactsTests {
    @Test func aDependencyWithoutARealChecksumGetsNoDigest() {
        let lock = """
            version = 3

            [[package]]
            name = "memchr"
            version = "2.5.0"
            source = "registry+https://github.com/rust-lang/crates.io-index"
            checksum = "Could not get crate checksum"

            [[package]]
            name = "regex"
            version = "1.7.0"
            source = "registry+https://github.com/rust-lang/crates.io-index"
            checksum = "48aaa5748ba571fb95cd2c85c09f629215d3a6ece942baa100950af03a34f733"

            [[package]]
            name = "hello"
            version = "0.1.0"
            """
        let deps = CargoBuilder.lockDependencies(lock)
        #expect(deps.map(\.uri) == ["pkg:cargo/memchr@2.5.0", "pkg:cargo/regex@1.7.0"])
        #expect(deps[0].digest == nil)
        #expect(deps[0].annotations?["digest"]?.contains("no checksum") == true)
        #expect(deps[1].digest == ["sha256": "48aaa5748ba571fb95cd2c85c09f629215d3a6ece942baa100950af03a34f733"])
        for d in deps { for (_, v) in d.digest ?? [:] { #expect(v.count == 64 && Hex.decode(v) != nil) } }
    }

    @Test func theBuilderRecordsItsOwnDigestAndTheStampedCommit() throws {
        let dir = try TemporaryDirectory()
        let exe = dir.file("kiln-worker")
        try FileManager.default.writeFile(atPath: exe, contents: Data("binary".utf8))
        let unstamped = BuilderIdentity(executable: exe).version
        #expect(unstamped["kiln-worker-sha256"] == FileDigest.of(bytes: Array("binary".utf8)).sha256)
        #expect(unstamped["kiln-source-commit"] == "unknown")
        let commit = String(repeating: "ab", count: 20)
        try FileManager.default.writeFile(atPath: dir.file("kiln-source.json"), contents: Data("{\"commit\":\"\(commit)\",\"dirty\":false}".utf8))
        let stamped = BuilderIdentity(executable: exe).version
        #expect(stamped["kiln-source-commit"] == commit)
        #expect(stamped["kiln-source-dirty"] == "false")
        #expect(stamped["kiln-worker"] == KilnVersion.release)
        // The running test binary is found through /proc/self/exe.
        #expect(BuilderIdentity.current.version["kiln-worker-sha256"]?.count == 64)
    }
}
