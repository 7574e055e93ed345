import Foundation
import KilnJobs
import KilnMessages
import Logging

/// Retries asked for by a caller: a new job with an ended one's inputs. (Automatic retries of an
/// attempt that ended for a reason that is not the build's fault — its worker went silent, crashed or
/// was shut down, a dependency could not be fetched for now — are `JobLifecycle` transitions.)
extension BuildCoordinator {
    /// `POST /build/{id}/retry`: a new job with the same inputs (source, options, build_config) and a
    /// fresh nonce unless one is given, recording which job it retries and the first of the chain.
    /// An uploaded source too large to travel inline is kept only while its job runs: such a job
    /// cannot be retried once it has ended (409, submit again).
    public func retryJob(_ original: Job, nonce: String, triggeredBy: String?) async throws -> Job {
        guard original.status.isTerminal else {
            throw CoordinationError(.conflict, "job \(original.id) is still \(original.status.rawValue); retry it once it has ended")
        }
        let job = try await enqueueAgain(original, nonce: nonce, triggeredBy: triggeredBy) { _, new in
            new.retryOf = original.id
            new.rebuildOf = original.rebuildOf  // a retried rebuild still compares with the same original
            new.originalBuild = original.originalBuild ?? original.id
        }
        logger.info("job queued as a retry", metadata: ["job_id": "\(job.id)", "retry_of": "\(original.id)"])
        return job
    }

    /// A new job from an ended one's stored inputs (`POST /build/{id}/retry` and `/rebuild`): a fresh
    /// id and `nonce`, the same source, build_config and build_options, then `adjust` adds the lineage.
    /// An uploaded source too large to travel inline is not kept after its job: 409.
    func enqueueAgain(
        _ original: Job, nonce: String, triggeredBy: String?, adjust: (inout BuildRequest, inout Job) throws -> Void
    ) async throws -> Job {
        guard var request = try? JSONDecoder().decode(BuildRequest.self, from: Data(original.request.utf8)) else {
            throw CoordinationError(.internalError, "job \(original.id)'s stored request is unreadable")
        }
        guard request.source == nil else {
            throw CoordinationError(.conflict, "job \(original.id)'s uploaded source is no longer kept (it was larger than the inline limit); submit it again")
        }
        let id = Self.newJobID()
        request.jobID = id
        request.nonce = nonce
        request.attempt = nil
        request.firstSeq = nil
        var new = Job(id: id, nonce: nonce, request: "", position: 0, queuedAt: Date(), sourceDigest: original.sourceDigest)
        new.maxAttempts = configuration.maxAttempts
        var options = original.requestOptions
        options.toolchain = nil  // learnt by the original's attempts, not asked for
        if options != BuildRequestOptions(), let json = try? JSONEncoder().encode(options) { new.options = String(decoding: json, as: UTF8.self) }
        new.triggeredBy = triggeredBy
        try adjust(&request, &new)
        new.request = String(decoding: try JSONEncoder().encode(request), as: UTF8.self)
        let job = try await store.enqueue(new)
        wakeDispatcher.yield()
        return job
    }
}
