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

    @Test func aTargetTheToolchainLacksIsTheFarmsProblem() async throws {
        let (_, _, end, _) = try await Self.build(Fixtures.helloCrate(), options: BuildOptions(target: "riscv64gc-unknown-none-elf"))
        #expect(end.type == .failed && end.failurePhase == "build", "\(end.message ?? "")")
        #expect(end.message?.contains("no standard library for target riscv64gc-unknown-none-elf") == true, "\(end.message ?? "")")
        #expect(end.suggestedAction?.contains("rustup target add") == true)
    }

    @Test func timeoutFromBuildConfigStopsTheBuild() async throws {
        let slow = Fixtures.helloCrate(name: "slow", buildRS: "fn main() { std::thread::sleep(std::time::Duration::from_secs(60)); }")
        let (_, _, end, _) = try await Self.build(slow, config: BuildConfig(timeoutSeconds: 3))
        #expect(end.type == .failed && end.failurePhase == "build", "\(end.message ?? "")")
        #expect(end.message?.contains("build time limit") == true, "\(end.message ?? "")")
    }

    @Test func moreThanTheWorkerAllowsIsRefusedBeforeAnythingRuns() async throws {
        let (_, _, end, _) = try await Self.build(Fixtures.helloCrate(), config: BuildConfig(memoryMiB: 1 << 20), workerArgs: ["--memory-mb", "4096"])
        #expect(end.type == .failed && end.failurePhase == "source", "\(end.message ?? "")")
        #expect(end.message?.contains("memory_mib is 1048576 and this worker allows at most 4096") == true, "\(end.message ?? "")")
        #expect(end.retryable == false)
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
        // Asked for, but the worker keeps builds offline: the farm says no.
        let (_, _, refusedEnd, _) = try await Self.build(probe, config: BuildConfig(internetAccess: true))
        #expect(refusedEnd.type == .failed && refusedEnd.failurePhase == "source" && refusedEnd.message?.contains("keeps builds offline") == true)
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
