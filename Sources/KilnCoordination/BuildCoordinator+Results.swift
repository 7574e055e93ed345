import Foundation
import KilnArchive
import KilnBus
import KilnBusClient
import KilnJobs
import KilnMessages
import Logging
import NIOCore

/// Result chunks from workers: checked against the job and its bound sender, written by the
/// `ResultAssembler` off the actor, and the job finalized once the whole result checks out.
extension BuildCoordinator {
    func handleResultChunk(_ message: BusMessage) async {
        guard answersOnlyTheWorkersInbox(message), let reply = message.reply else { return }
        func answer(_ ack: ResultChunkAck) async { try? await client.publish(reply, payload: Array((try? JSONEncoder().encode(ack)) ?? Data())) }
        let h = message.headers ?? [:]
        let bytes = message.payloadBytes
        let chunk: BusMessageParsing.ResultChunk
        switch BusMessageParsing.resultChunk(
            subject: message.subject, headers: message.headers, payloadCount: bytes.count,
            maxSize: configuration.maxResultBytes)
        {
        case .success(let c): chunk = c
        case .failure(.malformed(let why)):
            await answer(ResultChunkAck(ok: false, code: 400, message: why))
            return
        case .failure(.outOfRange(let why)):
            metrics.busMessagesRejected(.badChunk)
            logger.warning("\(why)", metadata: ["subject": "\(message.subject)"])
            await answer(ResultChunkAck(ok: false, code: 400, message: why))
            return
        }
        let (jobID, index, count, sha, size, offset) = (chunk.jobID, chunk.index, chunk.count, chunk.sha256, chunk.size, chunk.offset)
        if holdback.isHolding(jobID) {
            // It overtook its worker's acceptance: answered once that is recorded.
            if !holdback.hold(request: message, of: jobID) { metrics.busMessagesRejected(.heldBackOverflow) }
            return
        }
        let job: Job?
        do {
            job = try await store.job(jobID)
        } catch {
            await answer(ResultChunkAck(ok: false, code: 503, message: "the gateway cannot read its job store right now"))
            return
        }
        switch ResultIntake.decide(
            job: job, claimedWorker: h[ResultChunkHeaders.workerID], sha256: sha, ingestedElsewhere: job.map(isIngestedElsewhere) ?? false,
            fromJobsIdentity: { senders.accepts(message, identity: $0.workerIdentity, job: jobID, what: "a result chunk") })
        {
        case .unknownJob:
            await answer(ResultChunkAck(ok: false, code: 404, message: "unknown job"))
            return
        case .silent:
            return
        case .refuse(let stopWorker):
            await answer(ResultChunkAck(ok: false, code: 403, message: "not the worker assigned to this job"))
            if let stopWorker { await sendControl(jobID, .init(action: .cancel, workerID: stopWorker)) }
            return
        case .acknowledgeStored:
            await answer(ResultChunkAck(ok: true))
            return
        case .write:
            break
        }
        do {
            // Off the actor: other jobs' events go on while this chunk is written.
            try await assembler.write(job: jobID, offset: offset, bytes: bytes)
            try await store.recordChunk(job: jobID, index: index)
            try await apply(.workerSeen, to: jobID)
            // Chunks come several at a time (and again when an ack is slow): the one that completes
            // the set finishes the result; any other that sees it complete just acknowledges.
            if try await store.chunks(job: jobID).count == count, finishingResults.insert(jobID).inserted {
                defer { finishingResults.remove(jobID) }
                try await store.clearChunks(job: jobID)
                guard try await assembler.finish(job: jobID, sha256: sha, size: size) else {
                    await answer(ResultChunkAck(ok: false, code: 422, message: "the assembled result does not match sha256 \(sha)"))
                    return
                }
                try await apply(.resultStored(sha256: sha, size: size), to: jobID)
            }
            await answer(ResultChunkAck(ok: true))
        } catch {
            logger.error("cannot store result chunk: \(error)", metadata: ["job_id": "\(jobID)"])
            // The store or disk failing for a moment (a database restart, say): the worker sends it again.
            await answer(ResultChunkAck(ok: false, code: 503, message: "the gateway could not store the chunk right now"))
        }
    }
}
