import Foundation
import KilnMessages
import Logging

/// Automatic retries (#14): a job whose attempt ended for a reason that is not the build's fault — its
/// worker went silent, crashed or was shut down, a dependency could not be fetched for now, the farm
/// lacked something on that worker — runs again on another worker, up to `maxAttempts` in all. Never
/// for a compile error or anything else the build itself caused.
extension BuildCoordinator {
    /// Failure phases whose *retryable* failures are worth another attempt.
    static let retriedPhases: Set<String> = ["worker", "fetch", "detect", "upload"]

    /// Whether a worker's `failed` event ends the attempt but not the job.
    static func isRetriable(_ event: BuildEvent) -> Bool {
        event.type == .failed && event.retryable == true && retriedPhases.contains(event.failurePhase ?? "")
    }

    /// Runs `job` again if it has attempts left: a log event at `seq` says why, the job waits for a
    /// worker again (keeping its place in the queue), and that worker numbers its events from
    /// `seq + 1`, so the job's stream stays one sequence with every attempt in it. False (nothing
    /// changed) when no attempt is left or the job moved on meanwhile.
    func retry(_ job: Job, seq: Int, reason: String, requires toolchain: String? = nil) async -> Bool {
        guard job.attempt < job.maxAttempts, job.status == .building,
            var request = try? JSONDecoder().decode(BuildRequest.self, from: Data(job.request.utf8))
        else { return false }
        request.attempt = job.attempt + 1
        request.firstSeq = seq + 1
        guard let encoded = try? JSONEncoder().encode(request) else { return false }
        let attempt = job.attempt
        var options = job.requestOptions
        if let toolchain, ["cargo", "nix"].contains(toolchain) { options.toolchain = toolchain }
        let optionsJSON = options == BuildRequestOptions() ? nil : (try? JSONEncoder().encode(options)).map { String(decoding: $0, as: UTF8.self) }
        let updated = try? await store.update(job.id) { j in
            guard j.status == .building, j.attempt == attempt else { return }
            j.status = .waiting
            j.attempt = attempt + 1
            j.request = String(decoding: encoded, as: UTF8.self)
            if let optionsJSON { j.options = optionsJSON }
            j.workerID = nil
            j.workerIdentity = nil
            j.phase = nil
            j.lastSeenAt = nil
        }
        guard let updated, updated.attempt == attempt + 1 else { return false }
        running[job.id] = nil
        try? await store.clearChunks(job: job.id)
        var note = BuildEvent(jobID: job.id, seq: seq, type: .log)
        note.stream = "stderr"
        note.lines = ["[kiln] attempt \(attempt) of \(job.maxAttempts) ended: \(reason); trying again (attempt \(attempt + 1))"]
        let stored = StoredEvent(jobID: job.id, seq: seq, type: note.type.rawValue, data: Self.relayable(note))
        if (try? await store.appendEvent(stored)) == true {
            metrics.eventsStored.increment()
            await relay(stored)
        }
        logger.info("job retried", metadata: ["job_id": "\(job.id)", "attempt": "\(attempt + 1)", "reason": "\(reason)"])
        wakeDispatcher.yield()
        return true
    }

    /// `POST /build/{id}/retry`: a new job with the same inputs (source, options, build_config) and a
    /// fresh nonce unless one is given, recording which job it retries and the first of the chain.
    /// An uploaded source too large to travel inline is kept only while its job runs: such a job
    /// cannot be retried once it has ended (409, submit again).
    public func retryJob(_ original: Job, nonce: String, triggeredBy: String?) async throws -> Job {
        guard original.status.isTerminal else {
            throw GatewayError(.conflict, "job \(original.id) is still \(original.status.rawValue); retry it once it has ended")
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
            throw GatewayError(.internalServerError, "job \(original.id)'s stored request is unreadable")
        }
        guard request.source == nil else {
            throw GatewayError(.conflict, "job \(original.id)'s uploaded source is no longer kept (it was larger than the inline limit); submit it again")
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
