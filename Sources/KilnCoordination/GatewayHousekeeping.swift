import Foundation
import KilnJobs
import Logging
import ServiceLifecycle

/// The gateway's periodic work, a `Service` of its own in the `ServiceGroup`: every `interval` it
/// ends jobs whose worker fell silent (the coordinator owns job state), checkpoints the store,
/// deletes uploaded sources nobody needs any more and results past their retention.
package struct GatewayHousekeeping: Service {
    let coordinator: BuildCoordinator
    let store: any JobStore
    let files: ResultFiles
    let logger: Logger
    var interval: Duration = .seconds(1)

    package init(coordinator: BuildCoordinator, store: any JobStore, files: ResultFiles, logger: Logger, interval: Duration = .seconds(1)) {
        self.coordinator = coordinator
        self.store = store
        self.files = files
        self.logger = logger
        self.interval = interval
    }

    package func run() async throws {
        do {
            try await cancelWhenGracefulShutdown {
                while !Task.isCancelled {
                    try await Task.sleep(for: interval)
                    await once()
                }
            }
        } catch is CancellationError {}
        // Stopping: this gateway's building jobs go to another at once, not after the lease.
        await coordinator.retire()
    }

    func once() async {
        await coordinator.keepIngesting()
        await coordinator.catchUpPeerStreams()
        await coordinator.endSilentJobs()
        do { try await store.maintain() } catch { logger.warning("store maintenance failed: \(error)") }
        await removeUnneededUploads()
        await removeExpiredResults()
    }

    /// Uploaded sources are needed until their job ends (a worker fetches them, a retry may again).
    func removeUnneededUploads() async {
        for jobID in files.uploadedJobs() where jobID.hasPrefix("j") && !jobID.contains(".") {
            do {
                let job = try await store.job(jobID)
                if let job, !job.status.isTerminal { continue }
                // An upload is renamed into place just before its job is enqueued (a suspension point
                // away): one without a job yet is kept for a minute rather than deleted under its submitter.
                if job == nil, files.uploadAge(job: jobID).map({ $0 < 60 }) ?? false { continue }
                files.removeUpload(job: jobID)
            } catch {
                continue
            }
        }
    }

    func removeExpiredResults() async {
        let machine = JobLifecycle(now: Date(), retention: 0, gateway: "")
        do {
            for job in try await store.expiredResults(before: Date()) {
                guard let (_, transition) = try await store.modify(job.id, { machine.apply(.resultExpired, to: &$0) }), transition.refusal == nil
                else { continue }
                // Results are content-addressed: should two jobs ever hold the same bytes, the file stays
                // while either still does.
                if let sha = job.resultSha256, try await store.resultReferences(sha256: sha) == 0 { unlink(files.resultPath(sha256: sha)) }
            }
        } catch {
            // The next pass (a second later) finds what is left.
            logger.warning("cannot remove expired results: \(error)")
        }
    }
}
