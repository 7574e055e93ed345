import Foundation
import KilnTestSupport
import Testing

/// #14 item 1: rebuild and compare, end to end — a gateway, fresh workers, the real CLI verifying.
@Suite struct RebuildTests {
    /// A build script that embeds random bytes in one function: every build of it differs, in code.
    static let nondeterministicCrate: [String: String] = [
        "Cargo.toml": "[package]\nname = \"salty\"\nversion = \"0.1.0\"\nedition = \"2021\"\nbuild = \"build.rs\"\n",
        "build.rs": """
        use std::io::Read;
        fn main() {
            let mut b = [0u8; 8];
            std::fs::File::open("/dev/urandom").unwrap().read_exact(&mut b).unwrap();
            let out = std::env::var("OUT_DIR").unwrap();
            std::fs::write(format!("{out}/salt.rs"), format!("#[inline(never)] pub fn salt() -> u64 {{ {}u64 }}", u64::from_le_bytes(b))).unwrap();
        }

        """,
        "src/main.rs": "include!(concat!(env!(\"OUT_DIR\"), \"/salt.rs\"));\nfn main() { println!(\"{}\", salt()); }\n",
    ]

    /// Builds `files`, rebuilds it on a second worker, downloads both results, and runs
    /// `kiln verify --rebuilt --original` on them: (rebuild status, verify exit code, verify output).
    func buildAndRebuild(_ files: [String: String], in c: TestCluster) async throws -> (status: [String: Any], exit: Int32, output: [String], paths: (String, String), nonce: String) {
        let first = try await c.submit(files)
        try await c.startWorker()
        _ = try await c.waitForStatus(first, ["ready"])
        let asked = try await c.http(.POST, "/build/\(first)/rebuild")
        #expect(asked.status == 200, "\(asked.body)")
        let second = try #require(asked.json["job_id"] as? String)
        let nonce = try #require(asked.json["nonce"] as? String)
        #expect(asked.json["rebuild_of_build_id"] as? String == first)
        try await c.startWorker()
        let status = try await c.waitForStatus(second, ["ready", "error"])
        let original = c.dir.file("\(first).tar.gz")
        let rebuilt = c.dir.file("\(second).tar.gz")
        _ = try await c.download("/build/\(first)/result", to: original)
        _ = try await c.download("/build/\(second)/result", to: rebuilt)
        let v = try await LaunchedProcess(
            BuiltProducts.path("kiln"), ["verify", rebuilt, "--nonce", nonce, "--key", c.keyFile, "--allow-tee-none", "--rebuilt", "--original", original])
        let exit = try await v.waitForExit()
        return (status, exit, v.output, (original, rebuilt), nonce)
    }

    @Test func aReproducibleProjectRebuildsIdenticallyAndTheSignedComparisonVerifies() async throws {
        let c = try await TestCluster()
        defer { c.stop() }
        let (status, exit, output, paths, nonce) = try await buildAndRebuild(Fixtures.helloCrate(), in: c)
        #expect(status["status"] as? String == "ready", "\(status)")
        let comparison = try #require(status["comparison"] as? [String: Any], "\(status)")
        #expect(comparison["reproducible"] as? Bool == true && (comparison["differing_artifacts"] as? [Any])?.isEmpty == true, "\(comparison)")
        #expect(exit == 0, "\(output)")
        #expect(output.contains { $0.hasPrefix("REPRODUCED") } && output.contains { $0.contains("identical") && $0.contains("artifacts/hello") }, "\(output)")
        // The comparison is bound to the original it names: another result in its place is refused.
        let wrong = try await LaunchedProcess(
            BuiltProducts.path("kiln"), ["verify", paths.1, "--nonce", nonce, "--key", c.keyFile, "--allow-tee-none", "--rebuilt", "--original", paths.1])
        #expect(try await wrong.waitForExit() == 1)
        #expect(wrong.output.contains { $0.contains("verification FAILED at comparison") }, "\(wrong.output)")
        // A plain build is not a rebuild.
        let plain = try await LaunchedProcess(
            BuiltProducts.path("kiln"), ["verify", paths.0, "--nonce", "c0ffee00", "--key", c.keyFile, "--allow-tee-none", "--rebuilt"])
        #expect(try await plain.waitForExit() == 1)
        #expect(plain.output.contains { $0.contains("not a rebuild") }, "\(plain.output)")
    }

    @Test func aNondeterministicBuildIsReportedWithTheFileAndTheSectionThatDiffer() async throws {
        let c = try await TestCluster()
        defer { c.stop() }
        let (status, exit, output, _, _) = try await buildAndRebuild(Self.nondeterministicCrate, in: c)
        #expect(status["status"] as? String == "ready", "a rebuild that differs is still a result: \(status)")
        let comparison = try #require(status["comparison"] as? [String: Any], "\(status)")
        #expect(comparison["reproducible"] as? Bool == false, "\(comparison)")
        #expect(comparison["differing_artifacts"] as? [String] == ["artifacts/salty"], "\(comparison)")
        #expect(exit == 2, "authentic, but not reproduced: \(output)")
        #expect(output.contains { $0.hasPrefix("NOT REPRODUCED: 1 of 1") }, "\(output)")
        let sections = try #require(output.first { $0.contains("ELF sections that differ:") }, "\(output)")
        #expect(sections.contains(".text") || sections.contains(".rodata"), "the salt lives in code or read-only data: \(sections)")
        #expect(!sections.contains(".dynsym"), "only what the salt touched differs: \(sections)")
        #expect(output.contains { $0.contains("first difference at byte") }, "\(output)")
    }

    @Test func onlyAReadyBuildWithItsResultCanBeRebuilt() async throws {
        let c = try await TestCluster()
        defer { c.stop() }
        let waiting = try await c.submit(Fixtures.helloCrate())
        #expect(try await c.http(.POST, "/build/\(waiting)/rebuild").status == 409)
        #expect(try await c.http(.POST, "/build/nope/rebuild").status == 404)
        #expect(try await c.http(.POST, "/build/\(waiting)/rebuild", json: ["nonce": "xyz"]).status == 400)
    }
}
