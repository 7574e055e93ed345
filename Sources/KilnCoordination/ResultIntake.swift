import KilnJobs

/// The coordinator's result intake as a pure part (#30): what one result chunk from a worker means,
/// decided from the job as stored and the chunk's claims, in the way of `EventIntake` — no store, no
/// bus, no disk. `BuildCoordinator.handleResultChunk` reads the job, asks `decide`, and performs the
/// answer; the chunk's own bounds were checked before (`BusMessageParsing.resultChunk`).
///
/// The order of the checks is part of the contract: a job another gateway ingests gets no answer
/// from here (a refusal would be final for its worker), so that comes before the sender check, whose
/// rejections are counted and logged.
enum ResultIntake {
    enum Decision: Equatable {
        /// No such job here: 404, final for the worker.
        case unknownJob
        /// Another gateway assembles this job's result: no answer from this one.
        case silent
        /// Not from the job's worker, or the job is not taking a result: 403. `stopWorker` names a
        /// worker (other than the job's) that claims the job and should stop building it.
        case refuse(stopWorker: String?)
        /// The job's worker resending a chunk of the result already stored (its acknowledgement was
        /// slow or lost): acknowledged again, nothing written. The worker holds its final ack only
        /// once every chunk is acknowledged.
        case acknowledgeStored
        /// Write it; the chunk that completes the set finishes the result.
        case write
    }

    /// - Parameters:
    ///   - job: the job as stored, `nil` if unknown.
    ///   - claimedWorker: the worker id the chunk's headers name.
    ///   - sha256: the whole result's digest the chunk claims.
    ///   - ingestedElsewhere: whether another gateway ingests the job (`BuildCoordinator.isIngestedElsewhere`).
    ///   - fromJobsIdentity: whether the broker-stamped sender is the identity bound to the job
    ///     (`SenderCheck.accepts`, which counts and logs a rejection: called only when it decides).
    static func decide(
        job: Job?, claimedWorker: String?, sha256: String, ingestedElsewhere: Bool, fromJobsIdentity: (Job) -> Bool
    ) -> Decision {
        guard let job else { return .unknownJob }
        guard !ingestedElsewhere else { return .silent }
        guard fromJobsIdentity(job) else { return .refuse(stopWorker: nil) }
        guard let claimedWorker, claimedWorker == job.workerID else {
            return .refuse(stopWorker: claimedWorker)
        }
        switch job.status {
        case .building:
            return .write
        case .ready where job.resultSha256 == sha256:
            return .acknowledgeStored
        default:
            return .refuse(stopWorker: nil)
        }
    }
}
