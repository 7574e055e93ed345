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
    func buildAndRebuild(_ files: [String: String], in c: TestCluster) async throws -> (
        status: [String: Any], exit: Int32, output: [String], paths: (String, String), nonce: String
    ) {
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

    /// #14 item 4: the CLI follows — `kiln rebuild RESULT.tar.gz`, `kiln retry`, `kiln list`, and the
    /// progress display on a terminal (under `script`, which gives the CLI a pty).
    @Test func theCLIRebuildsRetriesListsAndShowsProgressOnATerminal() async throws {
        let c = try await TestCluster()
        defer { c.stop() }
        let env = ["KILN_GATEWAY": c.gateway.url, "PATH": "/usr/bin:/bin"]
        let kiln = BuiltProducts.path("kiln")
        let first = try await c.submit(Fixtures.helloCrate())
        try await c.startWorker()
        // On a terminal: a line per finished phase with its duration, the status line redrawn in place.
        let tty = try await LaunchedProcess("/usr/bin/script", ["-qec", "\(kiln) events \(first)", "/dev/null"], environment: env)
        #expect(try await tty.waitForExit() == 0, "\(tty.output)")
        let shown = tty.output.joined(separator: "\n")
        #expect(shown.contains("✔ build") && shown.contains("✔ attest") && shown.contains("\u{1B}[K"), "\(shown)")
        // Piped: plain lines.
        let piped = try await LaunchedProcess(kiln, ["events", first], environment: env)
        #expect(try await piped.waitForExit() == 0)
        #expect(piped.output.contains { $0.contains("phase build") } && !piped.output.joined().contains("\u{1B}"), "\(piped.output)")
        let original = c.dir.file("original.tar.gz")
        _ = try await c.download("/build/\(first)/result", to: original)

        // Rebuild from the result file: the job id comes from its manifest.
        let rebuiltPath = c.dir.file("rebuilt.tar.gz")
        let rebuild = try await LaunchedProcess(kiln, ["rebuild", original, "--follow", "-o", rebuiltPath], environment: env)
        try await c.startWorker()
        #expect(try await rebuild.waitForExit() == 0, "\(rebuild.output)")
        #expect(rebuild.output.contains { $0.contains("rebuilds \(first)") }, "\(rebuild.output)")
        #expect(rebuild.output.contains { $0.contains("rebuild REPRODUCED the original") }, "\(rebuild.output)")
        #expect(rebuild.output.contains { $0.contains("kiln verify \(rebuiltPath)") && $0.contains("--original \(original)") }, "\(rebuild.output)")
        #expect(FileManager.default.fileExists(atPath: rebuiltPath))

        let retry = try await LaunchedProcess(kiln, ["retry", first, "--nonce", "abcdef01"], environment: env)
        #expect(try await retry.waitForExit() == 0, "\(retry.output)")
        #expect(retry.output.contains { $0.contains("retries \(first); nonce abcdef01") }, "\(retry.output)")

        let list = try await LaunchedProcess(kiln, ["list"], environment: env)
        #expect(try await list.waitForExit() == 0, "\(list.output)")
        #expect(list.output.contains { $0.contains("rebuild of \(first) (reproduced)") }, "\(list.output)")
        #expect(list.output.contains { $0.contains("retry of \(first)") && $0.contains("waiting") }, "\(list.output)")
        // A job this farm does not hold is refused with a plain reason.
        let foreign = try await LaunchedProcess(kiln, ["rebuild", "jnosuchjob"], environment: env)
        #expect(try await foreign.waitForExit() != 0)
        #expect(foreign.output.contains { $0.contains("does not hold job jnosuchjob") }, "\(foreign.output)")
    }

    /// `kiln rebuild RESULT.tar.gz` for a result another farm built: the CLI resubmits the inputs its
    /// provenance names (here an uploaded archive, given back with --source and checked) and compares.
    @Test func aResultFromAnotherFarmIsRebuiltFromItsProvenanceAndComparedByTheCLI() async throws {
        let elsewhere = try await TestCluster()
        defer { elsewhere.stop() }
        let archive = try await Fixtures.archive(Fixtures.helloCrate(), root: "proj", zip: false)
        let archivePath = elsewhere.dir.file("proj.tar.gz")
        try Data(archive).write(to: URL(fileURLWithPath: archivePath))
        let submitted = try await elsewhere.http(
            .POST, "/build", json: ["nonce": "c0ffee00", "source_data": Data(archive).base64EncodedString(), "source_name": "proj.tar.gz"])
        let first = try #require(submitted.json["job_id"] as? String, "\(submitted.body)")
        try await elsewhere.startWorker()
        _ = try await elsewhere.waitForStatus(first, ["ready"])
        let original = elsewhere.dir.file("original.tar.gz")
        _ = try await elsewhere.download("/build/\(first)/result", to: original)

        let here = try await TestCluster()
        defer { here.stop() }
        let env = ["KILN_GATEWAY": here.gateway.url, "PATH": "/usr/bin:/bin"]
        let kiln = BuiltProducts.path("kiln")
        let missing = try await LaunchedProcess(kiln, ["rebuild", original], environment: env)
        #expect(try await missing.waitForExit() != 0)
        #expect(missing.output.contains { $0.contains("give that archive with --source") }, "\(missing.output)")
        let wrongPath = elsewhere.dir.file("wrong.tar.gz")
        try Data(try await Fixtures.archive(Fixtures.helloCrate(message: "other"), root: "proj", zip: false)).write(to: URL(fileURLWithPath: wrongPath))
        let wrong = try await LaunchedProcess(kiln, ["rebuild", original, "--source", wrongPath], environment: env)
        #expect(try await wrong.waitForExit() != 0)
        #expect(wrong.output.contains { $0.contains("is not the archive") }, "\(wrong.output)")

        let rebuild = try await LaunchedProcess(kiln, ["rebuild", original, "--source", archivePath, "-o", here.dir.file("rebuilt.tar.gz")], environment: env)
        try await here.startWorker()
        #expect(try await rebuild.waitForExit() == 0, "\(rebuild.output)")
        #expect(rebuild.output.contains { $0.contains("this farm does not hold job \(first)") }, "\(rebuild.output)")
        #expect(rebuild.output.contains { $0.hasPrefix("REPRODUCED") } && rebuild.output.contains { $0.contains("compared here by this CLI") }, "\(rebuild.output)")
    }
}
