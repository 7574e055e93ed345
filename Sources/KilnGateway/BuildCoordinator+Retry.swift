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
        var options = job.options.flatMap { try? JSONDecoder().decode(BuildRequestOptions.self, from: Data($0.utf8)) } ?? BuildRequestOptions()
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
            hub.publish(stored)
        }
        logger.info("job retried", metadata: ["job_id": "\(job.id)", "attempt": "\(attempt + 1)", "reason": "\(reason)"])
        wakeDispatcher.yield()
        return true
    }
}
