import Foundation
import KilnArchive
import KilnBus
import KilnBusClient
import KilnCore
import KilnJobs
import KilnMessages
import Logging
import NIOCore

/// Events from workers: the fast path for a job whose events are flowing (its worker and last seq
/// are known), the full path otherwise (acceptance binding, gaps answered with a replay request),
/// and finalization once a terminal event and the result are in.
extension BuildCoordinator {
    func handleEvent(_ message: BusMessage) async {
        guard let event = try? BuildEvent.decode(message.payloadBytes) else { return }
        if holdback.isHolding(event.jobID) {
            // Its dispatch is still being settled (see `offer`): kept, in order, until then.
            if !holdback.hold(event, message) { metrics.busMessagesRejected(.heldBackOverflow) }
            return
        }
        if !intake.isRunning(event.jobID), ownership.isKnownForeign(event.jobID) { return }  // another gateway ingests it
        await handleEvent(event, message)
    }

    func handleEvent(_ event: BuildEvent, _ message: BusMessage) async {
        if intake.isHotPath(event, fromJobsIdentity: { SenderCheck.matches(message, identity: $0) }) {
            // The hot path (logs, heartbeats, phases of a running build): one transaction, no reads.
            let stored = StoredEvent(jobID: event.jobID, seq: event.seq, type: event.type.rawValue, data: Self.relayable(event))
            do {
                if try await store.appendBuildingEvent(
                    stored, phase: event.type == .phase ? event.name : nil, seenAt: Date(), gateway: configuration.instanceID)
                {
                    intake.storedOnTheHotPath(event)
                    metrics.eventsStored.increment()
                    await relay(stored)
                    return
                }
            } catch {
                logger.error("cannot store event: \(error)", metadata: ["job_id": "\(event.jobID)"])
                return
            }
            // Not stored (a duplicate, or the job ended meanwhile): the full path decides.
            intake.forget(event.jobID)
        }
        await handleEventInFull(event, message)
    }

    /// Every check against the stored job: assignment, duplicates, gaps, state changes, `done`.
    private func handleEventInFull(_ event: BuildEvent, _ message: BusMessage) async {
        let job: Job
        do {
            guard let found = try await store.job(event.jobID) else { return }
            job = found
        } catch {
            // Not stored: the worker sends it again (its unacknowledged events are replayed).
            logger.warning("cannot read the job for event \(event.seq): \(error)", metadata: ["job_id": "\(event.jobID)"])
            return
        }
        guard !isIngestedElsewhere(job) else { return }
        guard senders.accepts(message, identity: job.workerIdentity, job: job.id, what: "a \(event.type.rawValue) event") else { return }
        do {
            switch intake.decide(event, job: job, lastStoredSeq: try await store.lastSeq(job: job.id), now: .now) {
            case .ignore, .awaitReplay: return
            case .stopWorker(let other): await sendControl(job.id, .init(action: .cancel, workerID: other))
            case .acknowledge(let seq, let worker): await sendControl(job.id, .init(action: .ack, seq: seq, workerID: worker))
            case .storeAndAcknowledge(let seq, let worker):
                logger.notice("storing the job's terminal event on its resend", metadata: ["job_id": "\(job.id)", "seq": "\(seq)"])
                if await storeAndRelay(event) { await sendControl(job.id, .init(action: .ack, seq: seq, workerID: worker)) }
            case .requestReplay(let from, let worker): await sendControl(job.id, .init(action: .replay, fromSeq: from, workerID: worker))
            case .apply(let done):
                let input: JobLifecycle.Input = done ? .workerDone(event, artifacts: try await attemptArtifacts(job.id)) : .workerEvent(event)
                guard let (updated, transition) = try await apply(input, to: job.id, workerEvent: event) else { return }
                intake.settled(event, job: updated, refused: transition.refusal != nil)
                if updated.status.isTerminal, transition.refusal == nil {
                    logger.info("job ended: \(updated.status.rawValue)", metadata: ["job_id": "\(job.id)"])
                }
            }
        } catch {
            logger.error("cannot store event: \(error)", metadata: ["job_id": "\(job.id)"])
        }
    }

    /// The artifacts the job's current attempt announced (after its `accepted`): what a ready job lists.
    func attemptArtifacts(_ jobID: String) async throws -> [ArtifactID] {
        let events = try await store.events(job: jobID, after: 0)
        let start = events.lastIndex { $0.kind == .accepted } ?? events.startIndex
        return events[start...].filter { $0.kind == .artifact }.compactMap { stored in
            // Stored by this gateway in its own encoding: one it cannot read back names no artifact.
            guard let e = try? BuildEvent.decode(Array(stored.data.utf8)), let path = e.path, let sha = e.sha256 else { return nil }
            return ArtifactID(name: path, sha256: sha)
        }
    }
}
