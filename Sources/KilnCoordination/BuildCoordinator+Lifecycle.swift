import Foundation
import KilnCore
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
        // A worker's event that could not be stored is not acknowledged: the worker sends it again,
        // and the intake stores it then (`EventIntake.Decision.storeAndAcknowledge`).
        var unstored = false
        for action in actions {
            switch action {
            case .storeWorkerEvent:
                guard let event = workerEvent else {
                    assertionFailure("storeWorkerEvent without the worker's event")
                    continue
                }
                if !(await storeAndRelay(event)) { unstored = true }
            case .storeEvent(let event):
                if !(await storeAndRelay(event)) { unstored = true }
            case .appendFinalEvent(let kind, let failure):
                await appendFinalEvent(job.id, kind, failure)
            case .acknowledge(let seq, let worker):
                guard !unstored else {
                    logger.warning("not acknowledging event \(seq): it was not stored; the worker sends it again", metadata: ["job_id": "\(job.id)"])
                    continue
                }
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

    /// Stores and relays one event at its own seq (a duplicate is not relayed again). False when the
    /// store failed (logged and counted).
    @discardableResult
    func storeAndRelay(_ event: BuildEvent) async -> Bool {
        let stored = StoredEvent(jobID: event.jobID, seq: event.seq, type: event.type.rawValue, data: Self.relayable(event))
        do {
            guard try await store.appendEvent(stored) else { return true }
        } catch {
            // The job's state is already written; a worker's event reaches clients when the worker
            // resends it (it is not acknowledged), the gateway's own final event is retried by
            // `appendFinalEvent` — and either way it is said, not silent.
            metrics.eventsLost.increment()
            logger.error("cannot store event \(event.seq) (\(event.type.rawValue)): \(error)", metadata: ["job_id": "\(event.jobID)"])
            return false
        }
        metrics.eventsStored.increment()
        await relay(stored)
        return true
    }

    /// A terminal event the gateway itself writes, after the last stored one: a waiting job
    /// cancelled, a job nobody can take, a silent worker, a result that is not the one announced.
    /// No worker resends it, so a store failure is retried here (five attempts over about three
    /// seconds) before it is given up, logged and counted.
    func appendFinalEvent(_ jobID: String, _ kind: BuildEvent.Kind, _ failure: JobFailure?) async {
        var backoff = Backoff(initial: .milliseconds(100), maximum: .seconds(2), maxAttempts: 5)
        var stored: StoredEvent?
        while true {
            do {
                var event = BuildEvent(jobID: jobID, seq: try await store.lastSeq(job: jobID) + 1, type: kind)
                failure?.record(on: &event)
                let candidate = StoredEvent(jobID: jobID, seq: event.seq, type: kind.rawValue, data: Self.relayable(event))
                stored = try await store.appendEvent(candidate) ? candidate : nil
                break
            } catch {
                let wait = backoff.nextDelay()
                let retrying = backoff.attemptFailed()
                if retrying {
                    logger.warning("retrying the job's final \(kind.rawValue) event (attempt \(backoff.attempts)): \(error)", metadata: ["job_id": "\(jobID)"])
                }
                // nil: the gateway is shutting down; given up like the last attempt.
                guard retrying, (try? await Task.sleep(for: wait)) != nil else {
                    metrics.eventsLost.increment()
                    logger.error("cannot write the job's final \(kind.rawValue) event: \(error)", metadata: ["job_id": "\(jobID)"])
                    return
                }
            }
        }
        guard let stored else { return }
        metrics.eventsStored.increment()
        await relay(stored)
    }
}
