import Foundation
import KilnArchive
import KilnAttestation
import KilnBusClient
import KilnMessages
import KilnTestSupport
import Testing

let testNonce = "a1b2c3d4e5f60718293a4b5c6d7e8f90"

/// Runs one build through a real broker and a real kiln-worker process; returns the dispatcher and worker.
func runBuild(_ request: (String) -> BuildRequest, workerArgs: [String] = [], broker: BrokerProcess? = nil,
              dir: TemporaryDirectory? = nil) async throws -> (TestDispatcher, WorkerProcess, BuildEvent, TemporaryDirectory) {
    let dir = try dir ?? TemporaryDirectory(prefix: "kiln-worker-test")
    let brokerProcess: BrokerProcess
    if let broker { brokerProcess = broker } else { brokerProcess = try await BrokerProcess() }
    let dispatcher = try await TestDispatcher(port: brokerProcess.port)
    let worker = try WorkerProcess(brokerPort: brokerProcess.port, dir: dir, extra: workerArgs)
    try await worker.waitUntilReady(dispatcher.client)
    let reply = try await dispatcher.dispatch(request(dispatcher.jobID))
    #expect(reply.accepted)
    #expect(reply.workerID == worker.id)
    let terminal = try await dispatcher.waitForTerminal()
    let status = try await worker.process.waitForExit(timeout: .seconds(60))
    #expect(status == 0, "worker exit status; output: \(worker.process.output.suffix(15).joined(separator: "\n"))")
    #expect(!FileManager.default.fileExists(atPath: worker.scratch), "scratch deleted")
    if broker == nil { brokerProcess.stop() }
    return (dispatcher, worker, terminal, dir)
}

/// `kiln verify` (the real CLI) on a result.
func kilnVerify(_ result: String, key: String, nonce: String = testNonce) async throws -> (Int32, [String]) {
    let p = try LaunchedProcess(BuiltProducts.path("kiln"), ["verify", result, "--nonce", nonce, "--key", key, "--allow-tee-none"])
    let status = try await p.waitForExit()
    return (status, p.output)
}

@Suite(.serialized) struct WorkerBuildTests {
    @Test func cargoFromTarGzVerifies() async throws {
        let archive = try Fixtures.archive(Fixtures.helloCrate(), root: "hello", zip: false)
        let (d, w, terminal, dir) = try await runBuild { job in
            BuildRequest(jobID: job, nonce: testNonce, sourceData: Data(archive).base64EncodedString(), sourceName: "hello.tar.gz")
        }
        #expect(terminal.type == .done, "\(d.events.last.map { "\($0.message ?? "")" } ?? "")  \(d.logLines.suffix(10))")
        let types = d.events.map(\.type)
        #expect(types.first == .accepted)
        let phases = d.events.filter { $0.type == .phase }.compactMap(\.name)
        #expect(phases == ["source", "detect", "build", "package", "attest", "upload"])
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
