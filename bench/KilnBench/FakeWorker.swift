import ArgumentParser
import Foundation
import KilnArchive
import KilnBusClient
import KilnMessages
import Logging

/// A stand-in worker for gateway benchmarks: takes one dispatch like a real worker, then publishes
/// `--events` events at `--rate` per second (each carrying its send time), optionally uploads
/// `--result-mb` of random bytes as the result, and ends with `done` (or `cancelled` without a result).
struct FakeWorker: AsyncParsableCommand {
    static let configuration = CommandConfiguration(commandName: "fake-worker")

    @Option var port: Int
    @Option var events = 1000
    @Option var rate = 1000.0
    @Option var resultMb = 0
    @Option var startDelay = 0.0
    @Option(help: "Wait until this file exists before publishing events.") var goFile: String?

    func run() async throws {
        var logger = Logger(label: "fake")
        logger.logLevel = .error
        let id = "fake" + UUID().uuidString.prefix(8).lowercased()
        var configuration = BusClient.Configuration(host: "127.0.0.1", port: port, pendingLimit: 64 << 20)
        configuration.inboxNamespace = id  // the gateway answers a worker on its own inbox only
        let client = try await BusClient.connect(configuration, logger: logger)
        let sub = try client.subscribe(Subjects.buildRequest, queue: Subjects.workersQueue, max: 1)
        try await client.flush()
        try await client.publish(Subjects.workersReady(id), payload: Array(try JSONEncoder().encode(WorkerReady(workerID: id, toolchains: [], arch: "x86_64"))))
        say("fake-worker ready \(id)")
        var iterator = sub.makeAsyncIterator()
        guard let msg = await iterator.next(), let reply = msg.reply,
            let request = try? JSONDecoder().decode(BuildRequest.self, from: Data(msg.payloadBytes))
        else { return }
        let control = try client.subscribe(Subjects.control(request.jobID))
        try await client.flush()
        try await client.publish(reply, payload: Array(try JSONEncoder().encode(DispatchReply.accept(workerID: id))))
        say("fake-worker job \(request.jobID)")
        var seq = 0
        func emit(_ type: BuildEvent.Kind, _ f: (inout BuildEvent) -> Void = { _ in }) async throws {
            seq += 1
            var e = BuildEvent(jobID: request.jobID, seq: seq, type: type)
            e.workerID = id
            f(&e)
            try await client.publish(Subjects.events(request.jobID, worker: id), payload: e.encoded())
        }
        try await emit(.accepted)
        if startDelay > 0 { try await Task.sleep(for: .seconds(startDelay)) }
        if let goFile {
            // Heartbeats while waiting, as a real worker sends them (the gateway ends silent jobs).
            var beat = ContinuousClock.now
            while !FileManager.default.fileExists(atPath: goFile) {
                try await Task.sleep(for: .milliseconds(20))
                if ContinuousClock.now - beat > .seconds(5) {
                    beat = ContinuousClock.now
                    try await emit(.heartbeat)
                }
            }
        }
        let interval = 1.0 / rate
        let start = Date()
        for i in 0..<events {
            let due = start.addingTimeInterval(Double(i) * interval)
            let wait = due.timeIntervalSinceNow
            if wait > 0 { try await Task.sleep(for: .seconds(wait)) }
            try await emit(.log) {
                $0.stream = "stdout"
                $0.lines = ["bench line \(i) t=\(wallClockNanos())"]
            }
        }
        if resultMb > 0 {
            let path = FileManager.default.temporaryDirectory.appendingPathComponent("fake-result-\(id)").path
            var rng = SystemRandomNumberGenerator()
            var bytes = [UInt8](repeating: 0, count: resultMb << 20)
            for i in stride(from: 0, to: bytes.count, by: 8) {
                let v = rng.next()
                withUnsafeBytes(of: v) { raw in for j in 0..<min(8, bytes.count - i) { bytes[i + j] = raw[j] } }
            }
            try Data(bytes).write(to: URL(fileURLWithPath: path))
            defer { try? FileManager.default.removeItem(atPath: path) }
            let digest = FileDigest.of(bytes: bytes)
            let chunk = 1 << 20
            let count = (bytes.count + chunk - 1) / chunk
            for index in 0..<count {
                let part = Array(bytes[(index * chunk)..<min(bytes.count, (index + 1) * chunk)])
                _ = try await client.request(
                    Subjects.result(request.jobID, worker: id), payload: part,
                    headers: [
                        ResultChunkHeaders.index: String(index), ResultChunkHeaders.count: String(count),
                        ResultChunkHeaders.sha256: digest.sha256, ResultChunkHeaders.size: String(digest.size),
                        ResultChunkHeaders.workerID: id,
                    ], timeout: .seconds(30))
            }
            try await emit(.done) {
                $0.sha256 = digest.sha256
                $0.size = digest.size
            }
        } else {
            try await emit(.cancelled)
        }
        // Wait for the gateway's ack of the terminal event.
        for await m in control {
            if let c = try? JSONDecoder().decode(ControlMessage.self, from: Data(m.payloadBytes)), c.action == .ack, (c.seq ?? 0) >= seq { break }
        }
        say("fake-worker finished")
        await client.close()
    }
}

/// Unbuffered, so the benchmark script sees it at once through a pipe.
func say(_ line: String) { FileHandle.standardOutput.write(Data((line + "\n").utf8)) }
