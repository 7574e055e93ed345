import Foundation
import KilnArchive
import KilnBusClient
import KilnMessages
import KilnTestSupport
import Logging
import NIOConcurrencyHelpers
import NIOCore

/// Plays the gateway's part of the protocol (design §3) for worker tests: dispatches one request,
/// records events, stores result chunks and acknowledges them, and acks the terminal event.
final class TestDispatcher: @unchecked Sendable {
    let client: BusClient
    let jobID: String
    let dir: TemporaryDirectory
    private let state = NIOLockedValueBox<(events: [BuildEvent], chunks: [Int: [UInt8]], count: Int?, sha: String?)>(([], [:], nil, nil))
    private var tasks: [Task<Void, Never>] = []
    let terminal = NIOLockedValueBox<BuildEvent?>(nil)
    /// When false, the terminal event is not acked (tests of resend).
    let autoAck: Bool

    init(port: Int, jobID: String = "job-" + UUID().uuidString.prefix(8).lowercased(), autoAck: Bool = true) async throws {
        var logger = Logger(label: "test.dispatcher")
        logger.logLevel = .error
        client = try await BusClient.connect(.init(host: "127.0.0.1", port: port), logger: logger)
        self.jobID = jobID
        self.autoAck = autoAck
        dir = try TemporaryDirectory(prefix: "kiln-dispatch")
        let events = try client.subscribe(Subjects.events(jobID, worker: "*"))
        let results = try client.subscribe(Subjects.result(jobID, worker: "*"))
        try await client.flush()
        let client = self.client
        let jobID = self.jobID
        tasks.append(
            Task { [state, terminal, autoAck] in
                for await m in events {
                    guard let e = try? BuildEvent.decode(m.payloadBytes) else { continue }
                    let isNew = state.withLockedValue { s -> Bool in
                        if s.events.contains(where: { $0.seq == e.seq }) { return false }
                        s.events.append(e)
                        s.events.sort { $0.seq < $1.seq }
                        return true
                    }
                    if e.type.isTerminal {
                        if isNew { terminal.withLockedValue { $0 = e } }
                        if autoAck {
                            let ack = ControlMessage(action: .ack, seq: e.seq)
                            try? await client.publish(Subjects.control(jobID), payload: Array(try! JSONEncoder().encode(ack)))
                        }
                    }
                }
            })
        tasks.append(
            Task { [state] in
                for await m in results {
                    let index = Int(m.headers?[ResultChunkHeaders.index] ?? "") ?? -1
                    let count = Int(m.headers?[ResultChunkHeaders.count] ?? "") ?? 0
                    state.withLockedValue { s in
                        s.chunks[index] = m.payloadBytes
                        s.count = count
                        s.sha = m.headers?[ResultChunkHeaders.sha256]
                    }
                    if let reply = m.reply { try? await client.publish(reply, string: "{\"ok\":true}") }
                }
            })
    }

    func dispatch(_ request: BuildRequest, subject: String = Subjects.buildRequest) async throws -> DispatchReply {
        let reply = try await client.request(subject, payload: Array(try JSONEncoder().encode(request)), timeout: .seconds(10))
        return try JSONDecoder().decode(DispatchReply.self, from: Data(reply.payloadBytes))
    }

    func control(_ message: ControlMessage) async throws {
        try await client.publish(Subjects.control(jobID), payload: Array(try JSONEncoder().encode(message)))
    }

    var events: [BuildEvent] { state.withLockedValue { $0.events } }

    /// Waits for the terminal event.
    /// Generous by default: a real build of 20-odd crates takes over two minutes on this 2-core machine
    /// when both cores are busy with something else (the loaded CI run, #27); a build that ends sooner
    /// returns sooner.
    func waitForTerminal(timeout: Duration = .seconds(900)) async throws -> BuildEvent {
        if let t = await eventually(within: timeout, every: .milliseconds(50), { terminal.withLockedValue { $0 } }) { return t }
        throw LaunchError("no terminal event within \(timeout); events: \(events.map { "\($0.seq):\($0.type.rawValue)" })")
    }

    func waitForEvent(_ predicate: (BuildEvent) -> Bool, timeout: Duration = .seconds(60)) async throws -> BuildEvent {
        if let e = await eventually(within: timeout, every: .milliseconds(50), { events.first(where: predicate) }) { return e }
        throw LaunchError("event not seen within \(timeout); events: \(events.map { "\($0.seq):\($0.type.rawValue)" })")
    }

    /// The reassembled result tarball (checked against the advertised sha256).
    func resultFile() throws -> String {
        let (chunks, count, sha) = state.withLockedValue { ($0.chunks, $0.count, $0.sha) }
        guard let count, chunks.count == count else { throw LaunchError("result incomplete: \(chunks.count)/\(count ?? -1) chunks") }
        var bytes: [UInt8] = []
        for i in 0..<count { bytes += chunks[i]! }
        guard FileDigest.of(bytes: bytes).sha256 == sha else { throw LaunchError("result sha256 mismatch") }
        let path = dir.file("result.tar.gz")
        try Data(bytes).write(to: URL(fileURLWithPath: path))
        return path
    }

    var logLines: [String] { events.filter { $0.type == .log }.flatMap { $0.lines ?? [] } }

    func close() async {
        for t in tasks { t.cancel() }
        await client.close()
    }
}

/// A kiln-worker process for tests.
final class WorkerProcess: @unchecked Sendable {
    let process: LaunchedProcess
    let id: String
    let scratch: String
    let keyFile: String

    init(brokerPort: Int, dir: TemporaryDirectory, id: String = "w" + UUID().uuidString.prefix(8).lowercased(), extra: [String] = []) async throws {
        self.id = id
        scratch = dir.file("scratch-\(id)")
        keyFile = dir.file("farm-key.pem")
        process = try await LaunchedProcess(
            BuiltProducts.path("kiln-worker"),
            [
                "--broker", "kiln://127.0.0.1:\(brokerPort)", "--worker-id", id, "--scratch", scratch,
                "--key", keyFile, "--idle-timeout", "120", "--log-level", "debug",
            ] + extra)
    }

    func waitUntilReady(_ client: BusClient) async throws {
        _ = try await process.waitForLine(prefix: "kiln-worker \(id) starting")
        // Ready = its one-shot subscription exists; the worker logs it.
        try await process.waitUntilWorkerReady()
    }
}
