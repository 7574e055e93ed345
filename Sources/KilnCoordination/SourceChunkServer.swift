import KilnBus
import KilnBusClient
import KilnJobs
import NIOPosix

/// Answers workers' `kiln.build.<job>.source` requests with chunks of an uploaded source. Stateless:
/// everything it decides comes from the request, the job in the store and the upload on disk, so it
/// needs no actor (the coordinator only holds back requests that overtake their job's acceptance).
/// The disk read runs on NIO's blocking thread pool.
struct SourceChunkServer: Sendable {
    let store: any JobStore
    let files: ResultFiles
    let client: BusClient
    let chunkSize: Int
    let metrics: GatewayMetrics
    let senders: SenderCheck

    func answer(_ message: BusMessage, jobID: String) async {
        guard let reply = message.reply else { return }
        // A job's source goes to the worker that accepted it only (its subject, and on kiln-broker its
        // stamp, say so), and anyone else gets the same 403 whether or not the job or its upload
        // exists (no oracle): a job nobody accepted has no source to give.
        // A store that cannot answer is a 403 too: the worker's request times out and it asks again.
        let job = try? await store.job(jobID)
        guard let job, job.status == .building, senders.accepts(message, identity: job.workerIdentity, job: jobID, what: "a source request") else {
            // A lost answer is a lost reply: the worker's request times out and it asks again.
            try? await client.publish(reply, payload: [UInt8](), headers: ["status": "403"])
            return
        }
        guard let (_, index) = BusMessageParsing.sourceRequest(subject: message.subject, headers: message.headers) else {
            // A lost answer is a lost reply: the worker's request times out and it asks again.
            try? await client.publish(reply, payload: [UInt8](), headers: ["status": "404"])
            return
        }
        // The blob: the job's uploaded source, or (`blob: original`) the result a rebuild is compared
        // with — which one is decided by the job's record, never by the request.
        let read: @Sendable (Int64) throws -> [UInt8]
        let size: Int64
        switch message.headers?["blob"] {
        case nil:
            guard let uploaded = files.uploadSize(job: jobID) else {
                // A lost answer is a lost reply: the worker's request times out and it asks again.
                try? await client.publish(reply, payload: [UInt8](), headers: ["status": "404"])
                return
            }
            size = uploaded
            read = { [files, chunkSize] offset in try files.readUpload(job: jobID, offset: offset, length: chunkSize) }
        case "original"?:
            guard let originalID = job.rebuildOf, let original = try? await store.job(originalID),
                let sha256 = original.resultSha256, let resultSize = original.resultSize, files.resultExists(sha256: sha256)
            else {
                // A lost answer is a lost reply: the worker's request times out and it asks again.
                try? await client.publish(reply, payload: [UInt8](), headers: ["status": "404"])
                return
            }
            size = resultSize
            read = { [files, chunkSize] offset in try files.readResult(sha256: sha256, offset: offset, length: chunkSize) }
        default:
            // A lost answer is a lost reply: the worker's request times out and it asks again.
            try? await client.publish(reply, payload: [UInt8](), headers: ["status": "404"])
            return
        }
        guard let offset = BusMessageParsing.sourceChunkOffset(index: index, chunkSize: chunkSize, size: size),
            let bytes = try? await NIOThreadPool.singleton.runIfActive({ try read(offset) })
        else {
            metrics.busMessagesRejected(.badChunk)
            // A lost answer is a lost reply: the worker's request times out and it asks again.
            try? await client.publish(reply, payload: [UInt8](), headers: ["status": "416"])
            return
        }
        // A lost answer is a lost reply: the worker's request times out and it asks again.
        try? await client.publish(reply, payload: bytes, headers: ["status": "200"])
    }
}
