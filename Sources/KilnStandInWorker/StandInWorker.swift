import Foundation
import KilnArchive
import KilnBusClient
import KilnMessages
import Logging

/// A worker that speaks the whole bus protocol a real `kiln-worker` speaks — one-shot subscription in
/// the workers' queue group, `ready` announcement, acceptance, events in sequence, replay on request,
/// a chunked result upload, the terminal event repeated until acknowledged — and builds nothing. For
/// load tests and benchmarks of gateways, stores and buses (#15), where a real build would measure
/// cargo instead. It takes one job after another until `jobs` are done or its task is cancelled.
public struct StandInWorker: Sendable {
    public struct Configuration: Sendable {
        public var workerID: String
        /// Log events between `accepted` and `done`.
        public var logEvents = 3
        /// Random result bytes uploaded per job.
        public var resultBytes = 4096
        public var resultChunkSize = 64 << 10
        /// Jobs to take before returning (nil: until cancelled).
        public var jobs: Int?
        public var ackTimeout: Duration = .seconds(30)

        /// The client's `inboxNamespace` must be `workerID`: the gateway answers a worker on its own inbox only.
        public init(workerID: String) { self.workerID = workerID }
    }

    public let client: BusClient
    public let configuration: Configuration
    public let logger: Logger

    public init(client: BusClient, configuration: Configuration, logger: Logger = Logger(label: "kiln.stand-in")) {
        self.client = client
        self.configuration = configuration
        self.logger = logger
    }

    /// Takes jobs until done; `accepted` is told each job id as it is accepted (tests count them).
    public func run(accepted: @Sendable (String) -> Void = { _ in }) async throws {
        var done = 0
        while configuration.jobs.map({ done < $0 }) ?? true {
            try Task.checkCancellation()
            guard let (jobID, reply) = try await nextJob() else { return }
            let control = try client.subscribe(Subjects.control(jobID))
            try await client.flush()
            try await client.publish(reply, payload: Array(try JSONEncoder().encode(DispatchReply.accept(workerID: configuration.workerID))))
            accepted(jobID)
            try await build(jobID, control: control)
            done += 1
        }
    }

    /// Announces itself and waits for one dispatch (a one-shot queue subscription, as real workers).
    private func nextJob() async throws -> (String, String)? {
        let requests = try client.subscribe(Subjects.buildRequest, queue: Subjects.workersQueue, max: 1)
        try await client.flush()
        let ready = WorkerReady(workerID: configuration.workerID, toolchains: [], arch: "x86_64")
        try await client.publish(Subjects.workersReady(configuration.workerID), payload: Array(try JSONEncoder().encode(ready)))
        for await message in requests {
            guard let reply = message.reply, let request = try? JSONDecoder().decode(BuildRequest.self, from: Data(message.payloadBytes)) else {
                return nil
            }
            return (request.jobID, reply)
        }
        return nil
    }

    private func build(_ jobID: String, control: BusSubscription) async throws {
        var events: [BuildEvent] = []
        func event(_ type: BuildEvent.Kind, _ configure: (inout BuildEvent) -> Void = { _ in }) -> BuildEvent {
            var e = BuildEvent(jobID: jobID, seq: events.count + 1, type: type)
            e.workerID = configuration.workerID
            configure(&e)
            events.append(e)
            return e
        }
        try await publish(event(.accepted))
        for i in 0..<configuration.logEvents {
            try await publish(
                event(.log) {
                    $0.stream = "stdout"
                    $0.lines = ["stand-in line \(i)"]
                })
        }
        var bytes = [UInt8](repeating: 0, count: configuration.resultBytes)
        var rng = SystemRandomNumberGenerator()
        for i in bytes.indices { bytes[i] = UInt8.random(in: 0...255, using: &rng) }
        let digest = FileDigest.of(bytes: bytes)
        try await upload(jobID, bytes, digest: digest)
        let done = event(.done) {
            $0.sha256 = digest.sha256
            $0.size = digest.size
        }
        try await publish(done)
        let sent = events
        // Until the terminal event is acknowledged: replays on request, and `done` again now and then
        // (the gateway may have been down when it was sent).
        try await withThrowingTaskGroup(of: Void.self) { group in
            group.addTask {
                for await message in control {
                    guard let c = try? JSONDecoder().decode(ControlMessage.self, from: Data(message.payloadBytes)),
                        c.workerID == nil || c.workerID == configuration.workerID
                    else { continue }
                    switch c.action {
                    case .ack where (c.seq ?? 0) >= done.seq: return
                    case .replay: for e in sent where e.seq >= (c.fromSeq ?? 1) { try await publish(e) }
                    case .cancel: return
                    default: continue
                    }
                }
            }
            group.addTask {
                let deadline = ContinuousClock.now + configuration.ackTimeout
                while ContinuousClock.now < deadline {
                    try await Task.sleep(for: .seconds(2))
                    try await publish(done)
                }
                throw StandInError("job \(jobID): no acknowledgement of done within \(configuration.ackTimeout)")
            }
            try await group.next()
            group.cancelAll()
        }
        // The stand-in is done with the job; a closed connection has no subscription left.
        try? await control.unsubscribe()
    }

    private func publish(_ event: BuildEvent) async throws {
        try await client.publish(Subjects.events(event.jobID, worker: configuration.workerID), payload: event.encoded())
    }

    private func upload(_ jobID: String, _ bytes: [UInt8], digest: FileDigest) async throws {
        let size = configuration.resultChunkSize
        let count = max(1, (bytes.count + size - 1) / size)
        for index in 0..<count {
            let part = Array(bytes[min(bytes.count, index * size)..<min(bytes.count, (index + 1) * size)])
            let headers = [
                ResultChunkHeaders.index: String(index), ResultChunkHeaders.count: String(count),
                ResultChunkHeaders.sha256: digest.sha256, ResultChunkHeaders.size: String(digest.size),
                ResultChunkHeaders.workerID: configuration.workerID,
            ]
            // No gateway answering for a moment (one restarting, a bus member gone): ask again.
            let deadline = ContinuousClock.now + configuration.ackTimeout
            while true {
                do {
                    let reply = try await client.request(Subjects.result(jobID, worker: configuration.workerID), payload: part, headers: headers, timeout: .seconds(5))
                    let ack = try JSONDecoder().decode(ResultChunkAck.self, from: Data(reply.payloadBytes))
                    if ack.ok { break }
                    // The gateway's store or disk failing for a moment: as a real worker, ask again.
                    if ack.isTransient { throw ResultChunkAck.Unavailable(message: ack.message) }
                    throw StandInError("job \(jobID): result chunk \(index) refused: \(ack.message ?? "code \(ack.code ?? 0)")")
                } catch let error as StandInError {
                    throw error
                } catch {
                    guard ContinuousClock.now < deadline else { throw error }
                    try await Task.sleep(for: .milliseconds(200))
                }
            }
        }
    }
}

/// A stand-in worker saw something a real worker would fail the build for.
public struct StandInError: Error, CustomStringConvertible {
    public var description: String
    public init(_ description: String) { self.description = description }
}
