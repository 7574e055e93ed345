import Foundation
import KilnArchive
import KilnBusClient
import KilnCore
import KilnMessages
import Logging

/// Sends the result tarball to the gateway in chunks (design §3): requests on
/// `kiln.build.<job>.result` with headers `{index, count, sha256, size, worker_id}`, a window of
/// several in flight, each retried until acknowledged or `deliveryTimeout` passes.
public struct ResultUploader: Sendable {
    let client: BusClient
    let jobID: String
    let workerID: String
    let chunkSize: Int
    let window: Int
    let deliveryTimeout: Duration
    let logger: Logger

    public func upload(path: String, digest: FileDigest) async throws {
        let count = max(1, Int((digest.size + Int64(chunkSize) - 1) / Int64(chunkSize)))
        let deadline = ContinuousClock.now + deliveryTimeout
        try await withThrowingTaskGroup(of: Void.self) { group in
            var next = 0
            func start(_ index: Int) {
                group.addTask { try await self.send(index: index, count: count, path: path, digest: digest, deadline: deadline) }
            }
            while next < min(window, count) {
                start(next)
                next += 1
            }
            while try await group.next() != nil {
                if next < count {
                    start(next)
                    next += 1
                }
            }
        }
    }

    private func send(index: Int, count: Int, path: String, digest: FileDigest, deadline: ContinuousClock.Instant) async throws {
        let chunk = try Self.read(path: path, offset: Int64(index) * Int64(chunkSize), length: chunkSize)
        let headers = [
            ResultChunkHeaders.index: String(index), ResultChunkHeaders.count: String(count),
            ResultChunkHeaders.sha256: digest.sha256, ResultChunkHeaders.size: String(digest.size),
            ResultChunkHeaders.workerID: workerID,
        ]
        // No gateway right now (restart) or a lost reply: try again until the deadline. A refusal
        // (a BuildFailure) is final.
        try await Backoff(initial: .milliseconds(200), maximum: .seconds(5)).retrying(
            until: deadline,
            shouldRetry: { !($0 is BuildFailure || $0 is CancellationError) },
            onRetry: { _, error in logger.debug("result chunk \(index) not acknowledged (\(error)); retrying", metadata: ["job_id": "\(jobID)"]) },
            giveUp: { error, _ in
                BuildFailure(
                    phase: "upload", message: "could not deliver the result to the gateway: \(error)", retryable: true,
                    suggestedAction: "retry the build")
            }
        ) {
            let reply = try await client.request(Subjects.result(jobID, worker: workerID), payload: chunk, headers: headers, timeout: .seconds(10))
            let ack = try JSONDecoder().decode(ResultChunkAck.self, from: Data(reply.payloadBytes))
            if ack.ok { return }
            if ack.isTransient { throw ResultChunkAck.Unavailable(message: ack.message) }
            throw BuildFailure(
                phase: "upload", message: "the gateway refused result chunk \(index): \(ack.message ?? "code \(ack.code ?? 0)")",
                retryable: ack.code != 403, suggestedAction: "retry the build")
        }
    }

    static func read(path: String, offset: Int64, length: Int) throws -> [UInt8] {
        guard let fh = FileHandle(forReadingAtPath: path) else { throw BuildFailure.internalError("upload", "cannot open \(path)") }
        defer { try? fh.close() }
        try fh.seek(toOffset: UInt64(offset))
        return Array(try fh.read(upToCount: length) ?? Data())
    }
}
