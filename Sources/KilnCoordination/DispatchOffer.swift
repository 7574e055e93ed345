import Foundation
import KilnBus
import KilnJobs
import KilnMessages

/// One dispatch offer as a pure part of the coordinator (#30): where a waiting job is offered, and
/// what the answer means — decided from the job's requirements, the worker directory and the reply,
/// with no bus, store or clock of its own. `BuildCoordinator.offer` performs the actions.
enum DispatchOffer {
    /// Where a job is offered.
    enum Route: Equatable {
        /// The workers' queue group: any idle worker can build it.
        case anyWorker
        /// One worker that announced it can (the job needs a target, network, resources…).
        case worker(String)
        /// No worker on the farm could ever take it: the job ends with this failure.
        case impossible(JobFailure)
        /// No worker that can build it is waiting now: skip it, offer the jobs behind it.
        case deferred
    }

    static func route(_ requirements: JobRequirements, workers: WorkerDirectory, now: Date) -> Route {
        guard !requirements.isEmpty else { return .anyWorker }
        if let candidate = workers.candidates(for: requirements, now: now).first { return .worker(candidate) }
        guard let why = workers.impossibility(of: requirements, now: now) else { return .deferred }
        let action = "the farm's operator can add workers that offer it; or submit without the option that needs it"
        return .impossible(JobFailure(phase: "dispatch", message: why, retryable: false, suggestedAction: action))
    }

    /// What came back for the offer.
    enum Reply: Equatable {
        /// The bus said nobody listens on the subject.
        case noResponders
        /// No answer within the acknowledgement timeout (or the request failed).
        case noAnswer
        /// An answer: its payload and the broker's sender stamp, if the bus stamps.
        case answered(payload: [UInt8], stamp: String?)
    }

    /// What the coordinator does about the answer, in order.
    enum Action: Equatable {
        /// Record the acceptance through the lifecycle (`offerAccepted`); a refusal there stops the worker.
        case accept(worker: String, identity: String)
        /// The worker is not a candidate any more (gone, declined, too late, or busy now).
        case workerUnavailable(String)
        /// Tell this worker not to build the job (it may accept after the timeout, too late).
        case stopWorker(String)
        /// Count one unanswered offer on the job (`offerUnanswered`); it keeps waiting.
        case countUnanswered
        /// The job can never be taken: it ends with this failure (`undispatchable`).
        case failUndispatchable(JobFailure)
        /// Count and log a reply that is not an answer a worker gives, or not from the worker it names.
        case rejectReply(Rejection)
    }

    enum Rejection: Equatable {
        case unreadable
        /// A stamped reply whose stamp names another worker than the one it says accepted: a worker
        /// may accept only as itself.
        case wrongSender(stamp: String, claimed: String)
    }

    /// How the dispatch round goes on after this offer.
    enum Outcome: Equatable {
        /// Placed, settled or worth trying again at once: offer the next job.
        case placed
        /// Nobody took it: stop this round (the next wake-up tries again).
        case noTaker
        /// Nobody that can build it waits now: skip it.
        case deferred
    }

    /// The answer's meaning for an offer on `chosen`'s subject (nil: the queue group).
    static func settle(_ reply: Reply, chosen: String?) -> (outcome: Outcome, actions: [Action]) {
        switch reply {
        case .noResponders:
            // The queue group is empty: wait for a worker. One worker's subject: gone, try the next one.
            guard let chosen else { return (.noTaker, []) }
            return (.placed, [.workerUnavailable(chosen)])
        case .noAnswer:
            return (.noTaker, [.countUnanswered] + (chosen.map { [.workerUnavailable($0), .stopWorker($0)] } ?? []))
        case .answered(let payload, let stamp):
            guard let answer = try? JSONDecoder().decode(DispatchReply.self, from: Data(payload)) else {
                // Not an answer a worker gives: treated as nobody taking it (the next pass offers it again).
                return (.placed, [.rejectReply(.unreadable)])
            }
            guard answer.accepted, let worker = answer.workerID, Subjects.isValidToken(worker) else {
                if answer.code == 400 {
                    let why = "a worker rejected the request: \(String((answer.message ?? "").prefix(4096)))"
                    return (.placed, [.failUndispatchable(JobFailure(phase: "dispatch", message: why, retryable: false))])
                }
                // Busy (409) or unable after all (422): not this one.
                return (.placed, chosen.map { [.workerUnavailable($0)] } ?? [])
            }
            if let stamp, let impostor = WorkerCredential.workerID(ofIdentity: stamp), impostor != worker {
                // Not recorded; the sender may still build what it took under another name, so it is told
                // to stop under its own.
                return (
                    .placed,
                    [.rejectReply(.wrongSender(stamp: stamp, claimed: worker))]
                        + (Subjects.isValidToken(impostor) ? [.stopWorker(String(impostor))] : []) + (chosen.map { [.workerUnavailable($0)] } ?? [])
                )
            }
            return (.placed, [.accept(worker: worker, identity: SenderCheck.identity(acceptedBy: worker, stamp: stamp))])
        }
    }
}
