import Foundation
import KilnJobs

/// Which gateway ingests a job, as a pure part (#30): decided from the job as stored, this gateway's
/// name and the time, in the way of `EventIntake` — no store, no bus, no clock of its own.
/// `BuildCoordinator` reads the job when it must and performs the rest (see `+Ingestion` for why one
/// gateway ingests each job).
///
/// It remembers the jobs another gateway ingests (`foreign`), so their workers' next messages cost
/// no store read. Only this gateway's own offer or adoption makes such a job its own again
/// (`claimed`). Bounded by `maxRemembered`: cleared when full (the cost is one read per job after).
struct IngestionOwnership {
    let gateway: String
    let maxRemembered: Int
    private(set) var foreign: Set<String> = []

    init(gateway: String, maxRemembered: Int = 10_000) {
        precondition(maxRemembered > 0, "IngestionOwnership must remember at least one job")
        self.gateway = gateway
        self.maxRemembered = maxRemembered
    }

    /// Whether a job is already known to be another gateway's (no read needed).
    func isKnownForeign(_ jobID: String) -> Bool { foreign.contains(jobID) }

    enum Verdict: Equatable {
        /// Nobody's yet, or this gateway's: answered here.
        case here
        /// Waiting, and another gateway's dispatch claim on it has not expired: that gateway is
        /// offering it, and what its worker sends first is that gateway's to answer (it holds it until
        /// the acceptance is recorded). Not remembered: the job may come back here.
        case offeredElsewhere
        /// Ingested by another gateway: remembered.
        case ingestedElsewhere
    }

    /// Who answers for `job`, as stored, at `now`.
    mutating func verdict(on job: Job, now: Date) -> Verdict {
        if job.status == .waiting, let offering = job.dispatchClaimedBy, offering != gateway, (job.dispatchClaimExpiresAt ?? .distantPast) > now {
            return .offeredElsewhere
        }
        guard let owner = job.ingestedBy, owner != gateway else { return .here }
        if foreign.count >= maxRemembered { foreign.removeAll() }
        foreign.insert(job.id)
        return .ingestedElsewhere
    }

    /// This gateway offers or adopts the job: it is no longer another's.
    mutating func claimed(_ jobID: String) {
        foreign.remove(jobID)
    }
}
