import Foundation
import KilnMessages
import KilnTestSupport
import Testing

/// #13 items 3–4 on a real worker: build_config narrows the sandbox, internet_access is given only when
/// both the request and the worker allow it, build_options reach cargo, and provenance records them.
@Suite(.serialized) struct BuildConfigTests {
    static func build(
        _ files: [String: String], config: BuildConfig? = nil, options: BuildOptions? = nil, workerArgs: [String] = []
    ) async throws -> (TestDispatcher, WorkerProcess, BuildEvent, TemporaryDirectory) {
        let archive = try await Fixtures.archive(files, root: "proj", zip: false)
        let (d, w, terminal, dir) = try await runBuild(
            { job in
                var r = BuildRequest(jobID: job, nonce: testNonce, sourceData: Data(archive).base64EncodedString(), sourceName: "proj.tar.gz")
                r.buildConfig = config
                r.buildOptions = options
                return r
            }, workerArgs: workerArgs)
        return (d, w, terminal, dir)  // the directory holds the worker's key: keep it while verifying
    }

    static let featureCrate: [String: String] = [
        "Cargo.toml": "[package]\nname = \"feat\"\nversion = \"0.1.0\"\nedition = \"2021\"\n\n[features]\nloud = []\n",
        "src/main.rs": """
        fn main() {
            #[cfg(feature = "loud")]
            println!("HELLO");
            #[cfg(not(feature = "loud"))]
            println!("hello");
        }

        """,
    ]

    @Test func featuresChangeTheArtifactAndAreSignedIntoTheProvenance() async throws {
        let (plain, _, plainEnd, _) = try await Self.build(Self.featureCrate)
        let (loud, w, loudEnd, dir) = try await Self.build(Self.featureCrate, options: BuildOptions(features: ["loud"]))
        #expect(plainEnd.type == .done && loudEnd.type == .done, "\(loudEnd.message ?? "")")
        let a = try #require(plain.events.first { $0.type == .artifact }?.sha256)
        let b = try #require(loud.events.first { $0.type == .artifact }?.sha256)
        #expect(a != b, "the feature changed the binary")
        let (status, output) = try await kilnVerify(try loud.resultFile(), key: w.keyFile)
        #expect(status == 0, "\(output)")
        #expect(output.contains { $0.contains("build_options") && $0.contains("loud") }, "\(output)")
        #expect(!output.contains { $0.contains("NOT HERMETIC") })
        withExtendedLifetime(dir) {}
    }

    /// An explicit `target` (one the worker's toolchain has) builds into cargo's per-target directory;
    /// the artifact is still found, and the target is signed into the provenance.
    @Test func anExplicitTargetIsBuiltForAndSignedIntoTheProvenance() async throws {
        let (d, w, end, dir) = try await Self.build(Self.featureCrate, options: BuildOptions(target: "x86_64-unknown-linux-gnu"))
        #expect(end.type == .done, "\(end.message ?? "") \(d.logLines.suffix(10))")
        #expect(d.events.contains { $0.type == .artifact }, "the binary under target/x86_64-unknown-linux-gnu/release is collected")
        let (status, output) = try await kilnVerify(try d.resultFile(), key: w.keyFile)
        #expect(status == 0, "\(output)")
        #expect(output.contains { $0.contains("build_options") && $0.contains("x86_64-unknown-linux-gnu") }, "\(output)")
        // The worker really passed it to cargo (the command is an internal parameter of the provenance).
        let unpacked = dir.file("unpacked")
        try FileManager.default.createDirectory(atPath: unpacked, withIntermediateDirectories: true)
        try await Command.run("/bin/tar", ["-xzf", try d.resultFile(), "-C", unpacked])
        let provenance = try #require(FileManager.default.enumerator(atPath: unpacked)?.compactMap { $0 as? String }.first { $0.hasSuffix("provenance.json") })
        let statement = try String(contentsOfFile: unpacked + "/" + provenance, encoding: .utf8)
        #expect(statement.contains("--target x86_64-unknown-linux-gnu"), "\(statement.prefix(3000))")
        withExtendedLifetime(dir) {}
    }

    @Test func timeoutFromBuildConfigStopsTheBuild() async throws {
        let slow = Fixtures.helloCrate(name: "slow", buildRS: "fn main() { std::thread::sleep(std::time::Duration::from_secs(60)); }")
        let (_, _, end, _) = try await Self.build(slow, config: BuildConfig(timeoutSeconds: 3))
        #expect(end.type == .failed && end.failurePhase == "build", "\(end.message ?? "")")
        #expect(end.message?.contains("build time limit") == true, "\(end.message ?? "")")
    }

    @Test func moreThanTheWorkerAllowsIsDeclinedBeforeAnythingRuns() async throws {
        let declined = try await declineReply(BuildConfig(memoryMiB: 1 << 20), workerArgs: ["--memory-mb", "4096"])
        #expect(!declined.accepted && declined.code == 422, "\(declined)")
        #expect(declined.message?.contains("memory_mib 1048576 (it gives at most 4096)") == true, "\(declined.message ?? "")")
    }

    /// Sends one request straight to a fresh worker and returns its answer (the worker is then stopped).
    func declineReply(_ config: BuildConfig, workerArgs: [String] = []) async throws -> DispatchReply {
        let broker = try await BrokerProcess()
        defer { broker.stop() }
        let dir = try TemporaryDirectory(prefix: "kiln-decline")
        let dispatcher = try await TestDispatcher(port: broker.port)
        let worker = try await WorkerProcess(brokerPort: broker.port, dir: dir, extra: workerArgs)
        defer { worker.process.stop() }
        try await worker.waitUntilReady(dispatcher.client)
        var request = BuildRequest(jobID: dispatcher.jobID, nonce: testNonce, sourceData: "", sourceName: "none.tar.gz")
        request.buildConfig = config
        let reply = try await dispatcher.dispatch(request, subject: Subjects.workerRequest(worker.id))
        await dispatcher.close()
        return reply
    }

    /// The build script connects to a port on the host's loopback: only a build with network reaches it.
    @Test func internetAccessIsGivenOnlyWhenAskedForAndAllowedAndProvenanceSaysSo() async throws {
        let listener = try await LaunchedProcess(
            "/usr/bin/python3",
            [
                "-u", "-c",
                "import socket; s=socket.socket(); s.bind(('127.0.0.1',0)); s.listen(16); print('port', s.getsockname()[1], flush=True)\nwhile True: s.accept()[0].close()",
            ])
        defer { listener.stop() }
        let port = try await listener.waitForLine(prefix: "port ")
        let probe = Fixtures.helloCrate(
            name: "probe", buildRS: "fn main() { std::net::TcpStream::connect(\"127.0.0.1:\(port)\").expect(\"no network\"); }")
        // Not asked for: the sandbox has no network.
        let (offline, _, offlineEnd, _) = try await Self.build(probe, workerArgs: ["--allow-internet-builds"])
        #expect(offlineEnd.type == .failed, "an offline build cannot reach the host")
        #expect(offline.logLines.contains { $0.contains("no network") }, "\(offline.logLines.suffix(10))")
        // Asked for, but the worker keeps builds offline: it declines the request.
        let refused = try await declineReply(BuildConfig(internetAccess: true))
        #expect(!refused.accepted && refused.code == 422 && refused.message?.contains("network for builds") == true, "\(refused)")
        // Asked for and allowed: it connects, and the signed provenance says the build was not hermetic.
        let (online, w, onlineEnd, dir) = try await Self.build(probe, config: BuildConfig(internetAccess: true), workerArgs: ["--allow-internet-builds"])
        #expect(onlineEnd.type == .done, "\(onlineEnd.message ?? "") \(online.logLines.suffix(10))")
        let (status, output) = try await kilnVerify(try online.resultFile(), key: w.keyFile)
        #expect(status == 0, "\(output)")
        #expect(output.contains { $0.contains("NOT HERMETIC") }, "\(output)")
        #expect(output.contains { $0.contains("internet_access=true") }, "\(output)")
        withExtendedLifetime(dir) {}
    }
}

/// A worker declines what it announced it cannot build, whoever sent it there (#13 item 5).
@Suite struct WorkerDeclineTests {
    @Test func aRequestBeyondTheWorkersCapabilitiesIsDeclinedAndTheWorkerStaysAvailable() async throws {
        let broker = try await BrokerProcess()
        defer { broker.stop() }
        let dir = try TemporaryDirectory(prefix: "kiln-decline")
        let dispatcher = try await TestDispatcher(port: broker.port)
        let worker = try await WorkerProcess(brokerPort: broker.port, dir: dir)
        defer { worker.process.stop() }
        try await worker.waitUntilReady(dispatcher.client)
        let archive = try await Fixtures.archive(Fixtures.helloCrate(), root: "hello", zip: false)
        var beyond = BuildRequest(jobID: dispatcher.jobID, nonce: testNonce, sourceData: Data(archive).base64EncodedString(), sourceName: "h.tar.gz")
        beyond.buildOptions = BuildOptions(target: "riscv64gc-unknown-none-elf")
        let declined = try await dispatcher.dispatch(beyond, subject: Subjects.workerRequest(worker.id))
        #expect(!declined.accepted && declined.code == 422, "\(declined)")
        #expect(declined.message?.contains("lacks the Rust target riscv64gc-unknown-none-elf") == true, "\(declined.message ?? "")")
        // Still waiting: a request it can build is accepted (through the queue group: it subscribed again).
        let plain = BuildRequest(jobID: dispatcher.jobID, nonce: testNonce, sourceData: Data(archive).base64EncodedString(), sourceName: "h.tar.gz")
        let accepted = try await dispatcher.dispatch(plain)
        #expect(accepted.accepted && accepted.workerID == worker.id, "\(accepted)")
        let end = try await dispatcher.waitForTerminal()
        #expect(end.type == .done)
        await dispatcher.close()
    }
}
