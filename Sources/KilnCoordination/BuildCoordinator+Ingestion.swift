import Foundation
import KilnJobs
import KilnMessages

/// Several gateways on one store (#15): each building job is ingested — its events stored and
/// acknowledged, its result assembled, its source served — by exactly one gateway, the one whose offer
/// its worker accepted (`Job.ingestedBy`). The others leave that job's worker messages alone and
/// relay its stored events to their own SSE clients (`PeerEventRelay`). A gateway that stops
/// heartbeating loses its jobs to the next live one, which asks their workers to replay what it has
/// not stored.
///
/// Why not a queue group: it spreads one job's events over gateways in no particular order, so
/// every gateway would have to read the job's last seq from the store for every event, and gaps
/// would appear where there are none. One ingester per job keeps the hot path a single insert.
extension BuildCoordinator {
    /// True when another gateway ingests `jobID` (remembered, so its next messages cost no read).
    /// Unknown jobs and jobs nobody ingests yet are answered by every gateway alike.
    func isIngestedElsewhere(_ jobID: String) async -> Bool {
        if intake.isRunning(jobID) { return false }
        if ownership.isKnownForeign(jobID) { return true }
        let job: Job?
        do { job = try await store.job(jobID) } catch {
            // Answered as this gateway's: a refusal from here would be wrong only for a job another
            // gateway ingests, and that one's worker resends what it does not get acknowledged.
            logger.warning("cannot read the job to see who ingests it: \(error)", metadata: ["job_id": "\(jobID)"])
            return false
        }
        guard let job else { return false }
        return isIngestedElsewhere(job)
    }

    func isIngestedElsewhere(_ job: Job) -> Bool {
        switch ownership.verdict(on: job, now: Date()) {
        case .here: return false
        case .offeredElsewhere: return true
        case .ingestedElsewhere:
            intake.forget(job.id)
            return true
        }
    }

    /// Every second (and at start): this gateway is alive; building jobs whose gateway is not are
    /// now this one's, each with a fresh silence clock and a replay request from the first event not
    /// stored.
    func keepIngesting() async {
        let me = configuration.instanceID
        do {
            peerGateways = try await store.heartbeat(gateway: me, lease: configuration.gatewayLease)
            for job in try await store.adoptOrphans(by: me, lease: configuration.gatewayLease) {
                ownership.claimed(job.id)
                intake.forget(job.id)
                let last = try await store.lastSeq(job: job.id)
                try await apply(.workerSeen, to: job.id)
                await sendControl(job.id, .init(action: .replay, fromSeq: last + 1, workerID: job.workerID))
                metrics.jobsAdopted.increment()
                logger.info(
                    "building job adopted; replay requested",
                    metadata: ["job_id": "\(job.id)", "from_seq": "\(last + 1)", "worker_id": "\(job.workerID ?? "")"])
            }
        } catch {
            logger.warning("cannot heartbeat or adopt jobs: \(error)")
        }
    }

    /// Every second: streams here of jobs other gateways ingest read the store when they have been quiet,
    /// in case a notice was lost (`PeerEventRelay.catchUp`). Only with other gateways alive: alone, a
    /// gateway ingests every job it streams.
    func catchUpPeerStreams() async {
        guard peerGateways > 0 else { return }
        let jobs = hub.followedJobs().filter { !intake.isRunning($0) }
        guard !jobs.isEmpty else { return }
        await peerRelay.catchUp(jobs: jobs, quietFor: .seconds(1))
    }

    /// At shutdown: this gateway's jobs may be adopted at once rather than after the lease.
    func retire() async {
        do { try await store.retire(gateway: configuration.instanceID) } catch { logger.warning("cannot retire from the store: \(error)") }
    }

    /// A stored event goes to this gateway's SSE clients and, when other gateways are alive, a
    /// notice of it to them.
    func relay(_ stored: StoredEvent) async {
        hub.publish(stored)
        guard peerGateways > 0 else { return }
        // A lost notice is caught up: peers read the store for streams that have been quiet for a
        // second (`catchUpPeerStreams`).
        try? await client.publish(
            Subjects.gatewayStored(stored.jobID), payload: Array(String(stored.seq).utf8),
            headers: [PeerEventRelay.gatewayHeader: configuration.instanceID])
    }
}
