import Foundation
import KilnArchive
import KilnAttestation
import KilnBusClient
import KilnMessages
import KilnTestSupport
import Testing

let testNonce = "a1b2c3d4e5f60718293a4b5c6d7e8f90"

/// Runs one build through a real broker and a real kiln-worker process; returns the dispatcher and worker.
/// The farm's fetch service runs beside the worker (`registry`: its Cargo registry), its state in
/// `dir/fetch` so that a test can run builds against one cache.
func runBuild(
    _ request: (String) -> BuildRequest, workerArgs: [String] = [], broker: BrokerProcess? = nil,
    dir: TemporaryDirectory? = nil, registry: String? = nil, fetchArgs: [String] = [], fetchAllowsLoopback: Bool = true,
    withFetchService: Bool = true
) async throws -> (TestDispatcher, WorkerProcess, BuildEvent, TemporaryDirectory) {
    let dir = try dir ?? TemporaryDirectory(prefix: "kiln-worker-test")
    let brokerProcess: BrokerProcess
    if let broker { brokerProcess = broker } else { brokerProcess = try await BrokerProcess() }
    let fetch =
        withFetchService
        ? try await FetchServiceProcess(
            broker: "kiln://127.0.0.1:\(brokerProcess.port)", state: dir.file("fetch"), registry: registry, arguments: fetchArgs,
            allowLoopback: fetchAllowsLoopback) : nil
    defer { fetch?.stop() }
    let dispatcher = try await TestDispatcher(port: brokerProcess.port)
    let worker = try await WorkerProcess(brokerPort: brokerProcess.port, dir: dir, extra: workerArgs)
    try await worker.waitUntilReady(dispatcher.client)
    let reply = try await dispatcher.dispatch(request(dispatcher.jobID))
    #expect(reply.accepted)
    #expect(reply.workerID == worker.id)
    let terminal = try await dispatcher.waitForTerminal()
    let status = try await worker.process.waitForExit(timeout: .seconds(180))
    #expect(status == 0, "worker exit status; output: \(worker.process.output.suffix(15).joined(separator: "\n"))")
    #expect(!FileManager.default.fileExists(atPath: worker.scratch), "scratch deleted")
    if broker == nil { brokerProcess.stop() }
    return (dispatcher, worker, terminal, dir)
}

/// `kiln verify` (the real CLI) on a result.
func kilnVerify(_ result: String, key: String, nonce: String = testNonce) async throws -> (Int32, [String]) {
    let p = try await LaunchedProcess(BuiltProducts.path("kiln"), ["verify", result, "--nonce", nonce, "--key", key, "--allow-tee-none"])
    let status = try await p.waitForExit()
    return (status, p.output)
}

@Suite(.serialized) struct WorkerBuildTests {
    @Test func cargoFromTarGzVerifies() async throws {
        let archive = try await Fixtures.archive(Fixtures.helloCrate(), root: "hello", zip: false)
        let (d, w, terminal, dir) = try await runBuild { job in
            BuildRequest(jobID: job, nonce: testNonce, sourceData: Data(archive).base64EncodedString(), sourceName: "hello.tar.gz")
        }
        #expect(terminal.type == .done, "\(d.events.last.map { "\($0.message ?? "")" } ?? "")  \(d.logLines.suffix(10))")
        let types = d.events.map(\.type)
        #expect(types.first == .accepted)
        let phases = d.events.filter { $0.type == .phase }.compactMap(\.name)
        #expect(phases == ["source", "detect", "fetch", "build", "package", "attest", "upload"])
        // #18: every line reaches the client before the next phase event. The detect phase's note is
        // written just before `build` starts; the log pump alone would ship it up to 100 ms later.
        let detected = try #require(d.events.first { $0.type == .log && ($0.lines ?? []).contains { $0.contains("detected a cargo project") } })
        let buildPhase = try #require(d.events.first { $0.type == .phase && $0.name == "build" })
        #expect(detected.seq < buildPhase.seq, "the detect note (seq \(detected.seq)) came after the build phase (seq \(buildPhase.seq))")
        let compiled = d.events.filter { $0.type == .log && ($0.lines ?? []).contains { $0.contains("Compiling hello") } }.map(\.seq)
        let packagePhase = try #require(d.events.first { $0.type == .phase && $0.name == "package" })
        #expect(!compiled.isEmpty && compiled.allSatisfy { $0 < packagePhase.seq })
        #expect(d.events.map(\.seq) == Array(1...d.events.count))
        let artifact = try #require(d.events.first { $0.type == .artifact })
        #expect(artifact.path == "artifacts/hello")
        let result = try d.resultFile()
        #expect(terminal.sha256 == (try FileDigest.of(file: result)).sha256)
        let (status, output) = try await kilnVerify(result, key: w.keyFile)
        #expect(status == 0, "\(output.joined(separator: "\n"))")
        await d.close()
        withExtendedLifetime(dir) {}
    }
}

@Suite(.serialized) struct WorkerSourceTests {
    @Test func cargoFromGitByBranchTagCommitAndAbbreviatedCommit() async throws {
        let git = try await GitFixture()
        defer { git.stop() }
        let commit = try await git.createRepository("hello", files: Fixtures.helloCrate(), tag: "v1.0", branch: "release")
        let broker = try await BrokerProcess()
        defer { broker.stop() }
        var digests: Set<String> = []
        for ref in ["main", "release", "v1.0", commit, String(commit.prefix(10))] {
            let (d, w, terminal, dir) = try await runBuild(
                { job in
                    BuildRequest(jobID: job, nonce: testNonce, repoURL: git.url("hello"), repoRef: ref)
                }, broker: broker)
            #expect(terminal.type == .done, "ref \(ref): \(terminal.message ?? "") \(d.logLines.suffix(5))")
            let result = try d.resultFile()
            let (status, output) = try await kilnVerify(result, key: w.keyFile)
            #expect(status == 0, "ref \(ref): \(output.joined(separator: "\n"))")
            // Provenance records the commit and the ref as sent.
            let unpacked = dir.file("unpacked-\(ref.prefix(12))")
            try FileManager.default.createDirectory(atPath: unpacked, withIntermediateDirectories: true)
            _ = try ArchiveExtractor().extract(archivePath: result, into: unpacked)
            let statement = try CanonicalJSON.decode(Statement.self, from: Array(try Data(contentsOf: URL(fileURLWithPath: unpacked + "/provenance.json"))))
            #expect(statement.predicate.buildDefinition.externalParameters.ref == ref)
            #expect(statement.predicate.buildDefinition.externalParameters.repository == git.url("hello"))
            #expect(statement.predicate.buildDefinition.resolvedDependencies.first?.digest?["gitCommit"] == commit)
            digests.insert(statement.subject.first?.digest?["sha256"] ?? "")
            await d.close()
        }
        #expect(digests.count == 1, "the same commit builds to the same binary")
    }

    @Test func unknownRefAndUnreachableRepository() async throws {
        let git = try await GitFixture()
        defer { git.stop() }
        try await git.createRepository("hello", files: Fixtures.helloCrate())
        let broker = try await BrokerProcess()
        defer { broker.stop() }
        let (d1, _, t1, _) = try await runBuild(
            { BuildRequest(jobID: $0, nonce: testNonce, repoURL: git.url("hello"), repoRef: "no-such-branch") }, broker: broker)
        #expect(t1.type == .failed)
        #expect(t1.failurePhase == "source")
        #expect(t1.message?.contains("ref 'no-such-branch' was not found") == true, "\(t1.message ?? "")")
        await d1.close()
        let closedPort = try FreePort.pick()
        let (d2, _, t2, _) = try await runBuild(
            { BuildRequest(jobID: $0, nonce: testNonce, repoURL: "git://127.0.0.1:\(closedPort)/nothing.git", repoRef: "main") },
            broker: broker)
        #expect(t2.type == .failed)
        #expect(t2.failurePhase == "source")
        #expect(t2.message?.contains("cannot reach") == true, "\(t2.message ?? "")")
        #expect(t2.retryable == true)
        await d2.close()
    }

    @Test func cargoFromZip() async throws {
        let archive = try await Fixtures.archive(Fixtures.helloCrate(name: "zipped"), root: "zipped", zip: true)
        let (d, w, terminal, dir) = try await runBuild { job in
            BuildRequest(jobID: job, nonce: testNonce, sourceData: Data(archive).base64EncodedString(), sourceName: "zipped.zip")
        }
        #expect(terminal.type == .done, "\(terminal.message ?? "")")
        #expect(d.events.contains { $0.type == .artifact && $0.path == "artifacts/zipped" })
        let (status, output) = try await kilnVerify(try d.resultFile(), key: w.keyFile)
        #expect(status == 0, "\(output.joined(separator: "\n"))")
        await d.close()
        withExtendedLifetime(dir) {}
    }

    @Test func nixDefaultAndFlake() async throws {
        let broker = try await BrokerProcess()
        defer { broker.stop() }
        for (files, expected) in [(Fixtures.nixDefault, "hello from nix"), (Fixtures.nixFlake, "hello from a flake")] {
            let archive = try await Fixtures.archive(files, root: "nixproj", zip: false)
            let (d, w, terminal, dir) = try await runBuild(
                { job in
                    BuildRequest(jobID: job, nonce: testNonce, sourceData: Data(archive).base64EncodedString(), sourceName: "nix.tar.gz")
                }, broker: broker)
            #expect(terminal.type == .done, "\(terminal.message ?? "") \(d.logLines.suffix(10))")
            let result = try d.resultFile()
            let (status, output) = try await kilnVerify(result, key: w.keyFile)
            #expect(status == 0, "\(output.joined(separator: "\n"))")
            let unpacked = dir.file("u")
            try FileManager.default.createDirectory(atPath: unpacked, withIntermediateDirectories: true)
            _ = try ArchiveExtractor().extract(archivePath: result, into: unpacked)
            #expect(try String(contentsOfFile: unpacked + "/artifacts/result", encoding: .utf8) == expected + "\n")
            await d.close()
        }
    }

    /// #18 item 3: a Nix job on a worker whose nix-daemon does not answer is the farm's problem:
    /// failed in `detect` saying what is missing, retryable, with an action for the operator (it was
    /// "nix-build failed … fix the build errors"); the worker says so at start-up too.
    @Test func aMissingNixDaemonIsTheFarmsProblemNotTheUsers() async throws {
        let archive = try await Fixtures.archive(Fixtures.nixDefault, root: "nixproj", zip: false)
        let (d, w, terminal, _) = try await runBuild(
            { job in
                BuildRequest(jobID: job, nonce: testNonce, sourceData: Data(archive).base64EncodedString(), sourceName: "nix.tar.gz")
            }, workerArgs: ["--nix-daemon-socket", "/nonexistent/kiln-test/daemon-socket"])
        #expect(terminal.type == .failed)
        #expect(terminal.failurePhase == "detect", "\(terminal.failurePhase ?? "")")
        #expect(terminal.message?.contains("the farm cannot build this") == true, "\(terminal.message ?? "")")
        #expect(terminal.message?.contains("the nix-daemon does not answer at /nonexistent/kiln-test/daemon-socket") == true, "\(terminal.message ?? "")")
        #expect(terminal.retryable == true)
        #expect(
            terminal.suggestedAction?.contains("not your project's") == true && terminal.suggestedAction?.contains("operator: start the nix-daemon") == true,
            "\(terminal.suggestedAction ?? "")")
        #expect(w.process.output.contains { $0.contains("Nix projects will fail here until this is fixed") }, "\(w.process.output.prefix(10))")
        await d.close()
    }

    @Test func failingBuildShipsCompilerOutput() async throws {
        let archive = try await Fixtures.archive(Fixtures.brokenCrate, root: "broken", zip: false)
        let (d, _, terminal, _) = try await runBuild { job in
            BuildRequest(jobID: job, nonce: testNonce, sourceData: Data(archive).base64EncodedString(), sourceName: "broken.tar.gz")
        }
        #expect(terminal.type == .failed)
        #expect(terminal.failurePhase == "build")
        #expect(terminal.retryable == false)
        #expect(d.logLines.contains { $0.contains("mismatched types") }, "\(d.logLines.suffix(20))")
        #expect(d.events.filter { $0.type.isTerminal }.count == 1)
        await d.close()
    }

    @Test func nothingToBuildFailsInDetect() async throws {
        let archive = try await Fixtures.archive(["README.md": "just docs\n", "notes/todo.txt": "x\n"], root: "docs", zip: false)
        let (d, _, terminal, _) = try await runBuild { job in
            BuildRequest(jobID: job, nonce: testNonce, sourceData: Data(archive).base64EncodedString(), sourceName: "docs.tar.gz")
        }
        #expect(terminal.type == .failed)
        #expect(terminal.failurePhase == "detect")
        #expect(terminal.message?.contains("no Cargo.toml, flake.nix or default.nix") == true)
        #expect(terminal.message?.contains("README.md") == true)
        await d.close()
    }

    @Test func hostileArchiveFailsInSource() async throws {
        let (d, _, terminal, _) = try await runBuild { job in
            BuildRequest(jobID: job, nonce: testNonce, sourceData: Data("not an archive".utf8).base64EncodedString(), sourceName: "x.zip")
        }
        #expect(terminal.type == .failed)
        #expect(terminal.failurePhase == "source")
        await d.close()
    }
}
