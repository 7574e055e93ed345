import Foundation
import KilnJobs
import KilnMessages
import Logging

/// The coordinator's side of `JobLifecycle`: every change of a job's status goes through `apply`,
/// which runs the pure transition inside the store's transaction and then performs the actions it
/// returns (store and relay events, acknowledge or stop workers, wake the dispatcher).
extension BuildCoordinator {
    typealias Transition = JobLifecycle.Transition

    var lifecycle: JobLifecycle {
        JobLifecycle(now: Date(), retention: configuration.retention.seconds, gateway: configuration.instanceID)
    }

    /// Applies `input` to job `id` as stored and performs the resulting actions; `workerEvent` is the
    /// event `.storeWorkerEvent` stores. Nil when the job is unknown. A store failure is thrown:
    /// nothing changed and nothing was performed.
    @discardableResult
    func apply(_ input: JobLifecycle.Input, to id: String, workerEvent: BuildEvent? = nil) async throws -> (job: Job, transition: Transition)? {
        let machine = lifecycle
        guard let (job, transition) = try await store.modify(id, { machine.apply(input, to: &$0) }) else { return nil }
        if let refusal = transition.refusal {
            logger.debug("job lifecycle refused an input: \(refusal)", metadata: ["job_id": "\(id)"])
        } else if job.status.isTerminal {
            metrics.jobEnded(job.status)
        }
        await perform(transition.actions, job: job, workerEvent: workerEvent)
        return (job, transition)
    }

    private func perform(_ actions: [JobLifecycle.Action], job: Job, workerEvent: BuildEvent?) async {
        for action in actions {
            switch action {
            case .storeWorkerEvent:
                guard let event = workerEvent else {
                    assertionFailure("storeWorkerEvent without the worker's event")
                    continue
                }
                await storeAndRelay(event)
            case .storeEvent(let event):
                await storeAndRelay(event)
            case .appendFinalEvent(let kind, let failure):
                await appendFinalEvent(job.id, kind, failure)
            case .acknowledge(let seq, let worker):
                await sendControl(job.id, .init(action: .ack, seq: seq, workerID: worker))
            case .stopWorker(let worker):
                await sendControl(job.id, .init(action: .cancel, workerID: worker))
            case .wakeDispatcher:
                intake.forget(job.id)
                wakeDispatcher.yield()
            case .clearResultChunks:
                do { try await store.clearChunks(job: job.id) } catch {
                    // Left behind, they are void anyway: the next attempt's chunks replace them by index.
                    logger.warning("cannot clear the previous attempt's result chunks: \(error)", metadata: ["job_id": "\(job.id)"])
                }
            }
        }
    }

    /// Stores and relays one event at its own seq (a duplicate is not relayed again).
    private func storeAndRelay(_ event: BuildEvent) async {
        let stored = StoredEvent(jobID: event.jobID, seq: event.seq, type: event.type.rawValue, data: Self.relayable(event))
        do {
            guard try await store.appendEvent(stored) else { return }
        } catch {
            // The job's state is already written; the event reaches clients when the worker resends it
            // (an unacknowledged terminal event is resent) — but say so, it is not silent.
            metrics.eventsLost.increment()
            logger.error("cannot store event \(event.seq) (\(event.type.rawValue)): \(error)", metadata: ["job_id": "\(event.jobID)"])
            return
        }
        metrics.eventsStored.increment()
        await relay(stored)
    }

    /// A terminal event the gateway itself writes, after the last stored one: a waiting job
    /// cancelled, a job nobody can take, a silent worker, a result that is not the one announced.
    func appendFinalEvent(_ jobID: String, _ kind: BuildEvent.Kind, _ failure: JobFailure?) async {
        let last: Int
        do { last = try await store.lastSeq(job: jobID) } catch {
            metrics.eventsLost.increment()
            logger.error("cannot write the job's final \(kind.rawValue) event: \(error)", metadata: ["job_id": "\(jobID)"])
            return
        }
        var event = BuildEvent(jobID: jobID, seq: last + 1, type: kind)
        failure?.record(on: &event)
        await storeAndRelay(event)
    }
}
