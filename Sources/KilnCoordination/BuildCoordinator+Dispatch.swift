import Foundation
import KilnBus
import KilnBusClient
import KilnJobs
import KilnMessages
import Logging
import NIOCore

/// Dispatch: waiting jobs, oldest first, to the workers' queue group — or, for a job whose request
/// needs more than any worker offers (a target, network, resources), to one worker that announced it
/// can, on that worker's own subject. A job no worker on the farm could ever take fails with the
/// reason instead of waiting for ever or failing on a worker.
extension BuildCoordinator {
    typealias Offer = DispatchOffer.Outcome

    /// Offers waiting jobs, oldest first, until nobody takes one; jobs that wait for a particular kind
    /// of worker do not hold up those behind them.
    func dispatchWaiting() async {
        if dispatching {
            dispatchAgain = true
            return
        }
        dispatching = true
        defer { dispatching = false }
        repeat {
            dispatchAgain = false
            var deferred: Set<String> = []
            round: while let job = await nextWaiting(skipping: deferred) {
                switch await offer(job) {
                case .placed: continue
                case .noTaker: break round
                case .deferred: deferred.insert(job.id)
                }
            }
        } while dispatchAgain
    }

    /// The next job to offer, claimed for this gateway for as long as an offer can take (another
    /// gateway on the same store skips it meanwhile).
    private func nextWaiting(skipping: Set<String>) async -> Job? {
        let until = Date().addingTimeInterval(configuration.ackTimeout.seconds + 10)
        do {
            return try await store.claimWaiting(by: configuration.instanceID, until: until, skipping: skipping)
        } catch {
            // This pass ends; housekeeping wakes the dispatcher again within a second.
            logger.warning("cannot claim a waiting job: \(error)")
            return nil
        }
    }

    /// One dispatch attempt.
    func offer(_ job: Job) async -> Offer {
        // A worker's first events can overtake its acceptance on the way here; they wait until the
        // assignment is recorded instead of being dropped as coming from an unknown worker.
        holdback.begin(job.id)
        ownership.claimed(job.id)
        let outcome = await offerOnce(job)
        // Placed or not, this gateway is done offering it: a job still waiting is anyone's again.
        do { try await store.releaseClaim(job.id, by: configuration.instanceID) } catch {
            // The claim expires on its own (`ackTimeout` + 10 s); only then may another gateway offer it.
            logger.warning("cannot release a dispatch claim: \(error)", metadata: ["job_id": "\(job.id)"])
        }
        while let (event, message) = holdback.nextEvent(of: job.id) {
            await handleEvent(event, message)
        }
        // Then the requests held back; any arriving from now on are answered directly.
        for message in holdback.release(job.id) {
            if BusMessageParsing.isResultChunk(subject: message.subject) {
                await handleResultChunk(message)
            } else {
                await sourceChunks.answer(message, jobID: job.id)
            }
        }
        return outcome
    }

    private func offerOnce(_ job: Job) async -> Offer {
        let asked = job.requestOptions
        var requirements = JobRequirements(buildConfig: asked.buildConfig, buildOptions: asked.buildOptions)
        if let toolchain = asked.toolchain { requirements.toolchain = toolchain }
        let now = Date()
        if !requirements.isEmpty { workers.expire(now: now) }
        let subject: String
        let chosen: String?
        switch DispatchOffer.route(requirements, workers: workers, now: now) {
        case .anyWorker: (subject, chosen) = (Subjects.buildRequest, nil)
        case .worker(let id): (subject, chosen) = (Subjects.workerRequest(id), id)
        case .deferred: return .deferred
        case .impossible(let failure):
            await failUndispatchable(job, failure)
            return .placed
        }
        let start = ContinuousClock.now
        let reply: DispatchOffer.Reply
        do {
            let message = try await client.request(subject, payload: Array(job.request.utf8), timeout: configuration.ackTimeout.timeAmount)
            reply = .answered(payload: message.payloadBytes, stamp: message.headers?[BusHeader.senderHeader])
        } catch BusClientError.noResponders {
            reply = .noResponders
        } catch {
            logger.warning("dispatch got no acceptance in time; will retry", metadata: ["job_id": "\(job.id)", "error": "\(error)"])
            reply = .noAnswer
        }
        let (outcome, actions) = DispatchOffer.settle(reply, chosen: chosen)
        for action in actions {
            switch action {
            case .accept(let worker, let identity):
                metrics.dispatchLatency.recordNanoseconds((ContinuousClock.now - start).nanoseconds)
                workers.busy(worker)
                await recordAcceptance(job, worker: worker, identity: identity)
            case .workerUnavailable(let worker):
                // Gone, declined (busy, unable after all) or too late: not a candidate any more.
                logger.info("worker not available for this job", metadata: ["job_id": "\(job.id)", "worker_id": "\(worker)"])
                workers.unavailable(worker)
            case .stopWorker(let worker):
                // It may accept after the timeout, too late (or took the job under another name).
                await sendControl(job.id, .init(action: .cancel, workerID: worker))
            case .countUnanswered:
                do { try await apply(.offerUnanswered, to: job.id) } catch {
                    // Only a count of attempts: the job waits on either way.
                    logger.warning("cannot count a dispatch attempt: \(error)", metadata: ["job_id": "\(job.id)"])
                }
            case .failUndispatchable(let failure):
                await failUndispatchable(job, failure)
            case .rejectReply(.unreadable):
                logger.warning("unreadable dispatch reply", metadata: ["job_id": "\(job.id)"])
            case .rejectReply(.wrongSender(let stamp, let claimed)):
                metrics.busMessagesRejected(.wrongSender)
                logger.warning(
                    "dispatch reply refused: '\(stamp)' accepted as worker '\(claimed)'", metadata: ["job_id": "\(job.id)"])
            }
        }
        return outcome
    }

    /// The acceptance, through the lifecycle: refused when the job was cancelled (or placed) meanwhile,
    /// and then the lifecycle stops this worker.
    private func recordAcceptance(_ job: Job, worker: String, identity: String) async {
        do {
            if let (_, transition) = try await apply(.offerAccepted(worker: worker, identity: identity), to: job.id), transition.refusal == nil {
                logger.info("job dispatched", metadata: ["job_id": "\(job.id)", "worker_id": "\(worker)"])
            }
        } catch {
            // Not recorded: this worker must not build a job the store does not say is its own.
            logger.error("cannot record a worker's acceptance: \(error)", metadata: ["job_id": "\(job.id)"])
            await sendControl(job.id, .init(action: .cancel, workerID: worker))
        }
    }

    /// No worker can ever take it (on this farm, or at all): the farm's answer, not the project's fault.
    private func failUndispatchable(_ job: Job, _ failure: JobFailure) async {
        do {
            guard let (_, transition) = try await apply(.undispatchable(failure), to: job.id), transition.refusal == nil else { return }
            logger.info("job cannot be dispatched", metadata: ["job_id": "\(job.id)", "reason": "\(failure.message)"])
        } catch {
            // It stays waiting: the next dispatch pass comes to the same verdict and tries again.
            logger.error("cannot record that a job cannot be dispatched: \(error)", metadata: ["job_id": "\(job.id)"])
        }
    }

    /// `kiln.workers.ready.<id>`: remembered when well formed and announced by that worker itself (the
    /// subject's id, and on kiln-broker its stamp, name the announced id), then dispatch is woken.
    func workerAnnounced(_ message: BusMessage) async {
        defer { wakeDispatcher.yield() }
        guard message.payload.readableBytes <= 64 << 10,
            let ready = try? JSONDecoder().decode(WorkerReady.self, from: Data(message.payloadBytes)), WorkerDirectory.isWellFormed(ready)
        else { return }
        let stamp = message.headers?[BusHeader.senderHeader]
        guard Subjects.publishingWorker(of: message.subject).map({ $0 == ready.workerID }) ?? false,
            stamp.map({ WorkerCredential.workerID(ofIdentity: $0) == nil || $0 == SenderCheck.identity(ofWorker: ready.workerID) }) ?? true
        else {
            metrics.busMessagesRejected(.wrongSender)
            logger.warning(
                "worker announcement for another worker's id dropped",
                metadata: ["sender": "\(stamp ?? message.subject)", "worker_id": "\(ready.workerID)"])
            return
        }
        workers.announced(ready, at: Date())
    }
}
