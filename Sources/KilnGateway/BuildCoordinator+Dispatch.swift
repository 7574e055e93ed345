import Foundation
import KilnBus
import KilnBusClient
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
        return try? await store.claimWaiting(by: configuration.instanceID, until: until, skipping: skipping)
    }

    /// One dispatch attempt.
    func offer(_ job: Job) async -> Offer {
        // A worker's first events can overtake its acceptance on the way here; they wait until the
        // assignment is recorded instead of being dropped as coming from an unknown worker.
        early[job.id] = []
        foreignJobs.remove(job.id)
        let outcome = await offerOnce(job)
        // Placed or not, this gateway is done offering it: a job still waiting is anyone's again.
        try? await store.releaseClaim(job.id, by: configuration.instanceID)
        while let queue = early[job.id], let (event, message) = queue.first {
            early[job.id] = Array(queue.dropFirst())
            await handleEvent(event, message)
        }
        // Then the requests held back; any arriving from now on are answered directly.
        early[job.id] = nil
        for message in earlyRequests.removeValue(forKey: job.id) ?? [] {
            if message.subject == Subjects.result(job.id) {
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
                    await failUndispatchable(job, why)
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
            _ = try? await store.update(job.id) { $0.dispatchAttempts += 1 }
            if let chosen {
                // It may yet accept, too late: tell it to stop rather than build a job nobody takes from it.
                workers.unavailable(chosen)
                await sendControl(job.id, .init(action: .cancel, workerID: chosen))
            }
            return .noTaker
        }
        guard let answer = try? JSONDecoder().decode(DispatchReply.self, from: Data(reply.payloadBytes)) else { return .placed }
        guard answer.accepted, let worker = answer.workerID else {
            if answer.code == 400 {
                _ = try? await store.update(job.id) {
                    $0.status = .error
                    $0.failurePhase = "dispatch"
                    $0.error = "a worker rejected the request: \(answer.message ?? "")"
                    $0.finishedAt = Date()
                }
            } else if let chosen {
                // Busy (409) or unable after all (422): not this one.
                logger.info("worker declined", metadata: ["job_id": "\(job.id)", "worker_id": "\(chosen)", "reason": "\(answer.message ?? "")"])
                workers.unavailable(chosen)
            }
            return .placed
        }
        metrics.dispatchLatency.recordNanoseconds((ContinuousClock.now - start).nanoseconds)
        workers.busy(worker)
        let me = configuration.instanceID
        let updated = try? await store.update(job.id) { j in
            guard j.status == .waiting else { return }
            j.status = .building
            j.workerID = worker
            j.workerIdentity = reply.headers?[BusHeader.senderHeader]
            j.ingestedBy = me
            j.startedAt = Date()
            j.lastSeenAt = Date()
            j.dispatchAttempts += 1
        }
        if updated?.workerID != worker {
            // Cancelled (or placed) meanwhile: this worker must not build it.
            await sendControl(job.id, .init(action: .cancel, workerID: worker))
        } else {
            logger.info("job dispatched", metadata: ["job_id": "\(job.id)", "worker_id": "\(worker)"])
        }
        return .placed
    }

    /// No worker on the farm can build it: the farm's answer, not the project's fault.
    private func failUndispatchable(_ job: Job, _ why: String) async {
        let action = "the farm's operator can add workers that offer it; or submit without the option that needs it"
        let updated = try? await store.update(job.id) { j in
            guard j.status == .waiting else { return }
            j.status = .error
            j.failurePhase = "dispatch"
            j.error = why
            j.retryable = false
            j.suggestedAction = action
            j.finishedAt = Date()
        }
        guard updated?.status == .error else { return }
        logger.info("job cannot be dispatched", metadata: ["job_id": "\(job.id)", "reason": "\(why)"])
        await synthesize(job.id, .failed) {
            $0.failurePhase = "dispatch"
            $0.message = why
            $0.retryable = false
            $0.suggestedAction = action
        }
    }

    /// `kiln.workers.ready`: remembered (when well formed and, on an authenticated bus, announced by
    /// that worker itself), then dispatch is woken.
    func workerAnnounced(_ message: BusMessage) async {
        defer { wakeDispatcher.yield() }
        guard message.payload.readableBytes <= 64 << 10,
            let ready = try? JSONDecoder().decode(WorkerReady.self, from: Data(message.payloadBytes)), WorkerDirectory.isWellFormed(ready)
        else { return }
        if let sender = message.headers?[BusHeader.senderHeader], sender.hasPrefix("worker:"), sender != "worker:" + ready.workerID {
            metrics.busMessagesRejected(.wrongSender)
            logger.warning("worker announcement for another worker's id dropped", metadata: ["sender": "\(sender)", "worker_id": "\(ready.workerID)"])
            return
        }
        workers.announced(ready, at: Date())
    }
}
