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
    enum Offer {
        /// Placed, settled (failed, refused) or worth trying again at once: go on.
        case placed
        /// Nobody took it: stop this round (the next wake-up tries again).
        case noTaker
        /// No worker that can build it is waiting now: skip it, try the jobs behind it.
        case deferred
    }

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
        early[job.id] = []
        foreignJobs.remove(job.id)
        let outcome = await offerOnce(job)
        // Placed or not, this gateway is done offering it: a job still waiting is anyone's again.
        do { try await store.releaseClaim(job.id, by: configuration.instanceID) } catch {
            // The claim expires on its own (`ackTimeout` + 10 s); only then may another gateway offer it.
            logger.warning("cannot release a dispatch claim: \(error)", metadata: ["job_id": "\(job.id)"])
        }
        while let queue = early[job.id], let (event, message) = queue.first {
            early[job.id] = Array(queue.dropFirst())
            await handleEvent(event, message)
        }
        // Then the requests held back; any arriving from now on are answered directly.
        early[job.id] = nil
        for message in earlyRequests.removeValue(forKey: job.id) ?? [] {
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
        var subject = Subjects.buildRequest
        var chosen: String?
        if !requirements.isEmpty {
            let now = Date()
            workers.expire(now: now)
            guard let candidate = workers.candidates(for: requirements, now: now).first else {
                if let why = workers.impossibility(of: requirements, now: now) {
                    let action = "the farm's operator can add workers that offer it; or submit without the option that needs it"
                    await failUndispatchable(job, JobFailure(phase: "dispatch", message: why, retryable: false, suggestedAction: action))
                    return .placed
                }
                return .deferred
            }
            subject = Subjects.workerRequest(candidate)
            chosen = candidate
        }
        let start = ContinuousClock.now
        let reply: BusMessage
        do {
            reply = try await client.request(subject, payload: Array(job.request.utf8), timeout: configuration.ackTimeout.timeAmount)
        } catch BusClientError.noResponders {
            guard let chosen else { return .noTaker }
            workers.unavailable(chosen)  // gone: try the next one
            return .placed
        } catch {
            logger.warning("dispatch got no acceptance in time; will retry", metadata: ["job_id": "\(job.id)", "error": "\(error)"])
            do { try await apply(.offerUnanswered, to: job.id) } catch {
                // Only a count of attempts: the job waits on either way.
                logger.warning("cannot count a dispatch attempt: \(error)", metadata: ["job_id": "\(job.id)"])
            }
            if let chosen {
                // It may yet accept, too late: tell it to stop rather than build a job nobody takes from it.
                workers.unavailable(chosen)
                await sendControl(job.id, .init(action: .cancel, workerID: chosen))
            }
            return .noTaker
        }
        guard let answer = try? JSONDecoder().decode(DispatchReply.self, from: Data(reply.payloadBytes)) else {
            // Not an answer a worker gives: treated as nobody taking it (the next pass offers it again).
            logger.warning("unreadable dispatch reply", metadata: ["job_id": "\(job.id)"])
            return .placed
        }
        guard answer.accepted, let worker = answer.workerID else {
            if answer.code == 400 {
                let why = "a worker rejected the request: \(String((answer.message ?? "").prefix(4096)))"
                await failUndispatchable(job, JobFailure(phase: "dispatch", message: why, retryable: false))
            } else if let chosen {
                // Busy (409) or unable after all (422): not this one.
                logger.info("worker declined", metadata: ["job_id": "\(job.id)", "worker_id": "\(chosen)", "reason": "\(answer.message ?? "")"])
                workers.unavailable(chosen)
            }
            return .placed
        }
        metrics.dispatchLatency.recordNanoseconds((ContinuousClock.now - start).nanoseconds)
        workers.busy(worker)
        do {
            // Refused when the job was cancelled (or placed) meanwhile: the lifecycle stops this worker.
            if let (_, transition) = try await apply(
                .offerAccepted(worker: worker, identity: SenderCheck.identity(acceptedBy: worker, stamp: reply.headers?[BusHeader.senderHeader])),
                to: job.id),
                transition.refusal == nil
            {
                logger.info("job dispatched", metadata: ["job_id": "\(job.id)", "worker_id": "\(worker)"])
            }
        } catch {
            // Not recorded: this worker must not build a job the store does not say is its own.
            logger.error("cannot record a worker's acceptance: \(error)", metadata: ["job_id": "\(job.id)"])
            await sendControl(job.id, .init(action: .cancel, workerID: worker))
        }
        return .placed
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
            stamp.map({ !$0.hasPrefix("worker:") || $0 == SenderCheck.identity(ofWorker: ready.workerID) }) ?? true
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
