import Foundation
import KilnJobs
import KilnMessages

/// Rebuild and compare (#14): the same inputs again on a fresh worker (kiln-pool starts one per job,
/// so the rebuild never runs where the original did), whose result carries a signed comparison with
/// the original's artifacts.
extension BuildCoordinator {
    /// `POST /build/{id}/rebuild`: a new job with the original's inputs — a repository build pinned to
    /// the commit the original actually built — a fresh nonce unless one is given, and the original
    /// result to compare with. Only a `ready` job whose result is still kept can be rebuilt.
    public func rebuildJob(_ original: Job, nonce: String, triggeredBy: String?) async throws -> Job {
        guard original.status == .ready else {
            throw CoordinationError(.conflict, "job \(original.id) is \(original.status.rawValue); only a ready build can be rebuilt and compared")
        }
        guard let sha256 = original.resultSha256, let size = original.resultSize, files.resultExists(sha256: sha256) else {
            throw CoordinationError(.gone, "job \(original.id): " + (original.resultAvailability ?? "the result was deleted") + "; there is nothing to compare with")
        }
        let job = try await enqueueAgain(original, nonce: nonce, triggeredBy: triggeredBy) { request, new in
            if request.repoURL != nil {
                guard let commit = original.sourceDigest else {
                    throw CoordinationError(.conflict, "job \(original.id) did not record the commit it built; submit the repository at that commit instead")
                }
                request.repoRef = commit
            }
            request.compareWith = .init(buildID: original.id, sha256: sha256, size: size, chunkSize: configuration.sourceChunkSize)
            new.rebuildOf = original.id
        }
        logger.info("job queued as a rebuild", metadata: ["job_id": "\(job.id)", "rebuild_of": "\(original.id)"])
        return job
    }
}
