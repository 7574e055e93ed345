import Foundation
import KilnArchive
import KilnBus
import KilnBusClient
import KilnCore
import KilnMessages
import Logging
import NIOCore

/// Events from workers: the fast path for a job whose events are flowing (its worker and last seq
/// are known), the full path otherwise (acceptance binding, gaps answered with a replay request),
/// and finalization once a terminal event and the result are in.
extension BuildCoordinator {
    func handleEvent(_ message: BusMessage) async {
        guard let event = try? BuildEvent.decode(message.payloadBytes) else { return }
        if early[event.jobID] != nil {
            // Its dispatch is still being settled (see `offer`): kept, in order, until then.
            early[event.jobID]?.append((event, message))
            return
        }
        if running[event.jobID] == nil, foreignJobs.contains(event.jobID) { return }  // another gateway ingests it
        await handleEvent(event, message)
    }

    func handleEvent(_ event: BuildEvent, _ message: BusMessage) async {
        if let known = running[event.jobID], known.worker == event.workerID, known.lastSeq + 1 == event.seq, !event.type.isTerminal,
            known.identity == nil || message.headers?[BusHeader.senderHeader] == known.identity
        {
            // The hot path (logs, heartbeats, phases of a running build): one transaction, no reads.
            let stored = StoredEvent(jobID: event.jobID, seq: event.seq, type: event.type.rawValue, data: Self.relayable(event))
            do {
                if try await store.appendBuildingEvent(
                    stored, phase: event.type == .phase ? event.name : nil, seenAt: Date(), gateway: configuration.instanceID)
                {
                    running[event.jobID]?.lastSeq = event.seq
                    metrics.eventsStored.increment()
                    await relay(stored)
                    return
                }
            } catch {
                logger.error("cannot store event: \(error)", metadata: ["job_id": "\(event.jobID)"])
                return
            }
            // Not stored (a duplicate, or the job ended meanwhile): the full path decides.
            running[event.jobID] = nil
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
        guard let worker = event.workerID, worker == job.workerID else {
            if let other = event.workerID, job.status != .waiting {
                await sendControl(job.id, .init(action: .cancel, workerID: other))
            }
            return
        }
        do {
            let last = try await store.lastSeq(job: job.id)
            if event.seq <= last {
                // A duplicate (replay, resend). If it is the terminal one, the worker may have missed our ack.
                if event.type.isTerminal, job.status.isTerminal { await sendControl(job.id, .init(action: .ack, seq: event.seq, workerID: worker)) }
                return
            }
            if event.seq > last + 1 {
                let now = ContinuousClock.now
                if lastReplay[job.id].map({ now - $0 > .seconds(1) }) ?? true {
                    lastReplay[job.id] = now
                    await sendControl(job.id, .init(action: .replay, fromSeq: last + 1, workerID: worker))
                }
                return
            }
            guard !job.status.isTerminal else { return }
            if Self.isRetriable(event), job.attempt < job.maxAttempts {
                // Not the build's fault: this attempt ends (the worker may exit), the job runs again.
                let why = "\(event.failurePhase ?? "?") failed on worker \(worker): \(event.message ?? "")"
                if await retry(job, seq: event.seq, reason: why, requires: event.requires) {
                    await sendControl(job.id, .init(action: .ack, seq: event.seq, workerID: worker))
                    return
                }
            }
            let stored = StoredEvent(jobID: job.id, seq: event.seq, type: event.type.rawValue, data: Self.relayable(event))
            // Job state first, event second: whoever sees a terminal event finds the job already terminal
            // (a client that downloads right after `done` gets the result, not a 409).
            let now = Date()
            var updated = try await store.update(job.id) { j in
                j.lastSeenAt = now
                if event.type == .phase, let name = event.name { j.phase = name }
                // A repository build: the commit and tree it actually built (40 hex each, or ignored).
                if event.type.isTerminal, j.sourceDigest == nil, let commit = event.sourceCommit, let tree = event.sourceTree,
                    Hex.isLowercase(commit, bytes: 20), Hex.isLowercase(tree, bytes: 20)
                {
                    j.sourceDigest = commit
                    j.sourceTree = tree
                }
                // A rebuild's verdict (the signed comparison is in its result; this is the summary).
                if event.type == .done, j.rebuildOf != nil, let reproducible = event.reproducible {
                    j.reproducible = reproducible
                    let names = (event.differingArtifacts ?? []).prefix(1000).map { String($0.prefix(4096)) }
                    j.differingArtifacts = (try? JSONEncoder().encode(Array(names))).map { String(decoding: $0, as: UTF8.self) }
                }
                if event.type.isTerminal, let summary = event.cacheSummary, let json = try? JSONEncoder().encode(summary) {
                    j.cacheSummary = String(decoding: json, as: UTF8.self)
                }
                switch event.type {
                case .failed:
                    j.status = .error
                    j.failurePhase = event.failurePhase
                    j.error = event.message
                    j.retryable = event.retryable
                    j.suggestedAction = event.suggestedAction
                    j.finishedAt = now
                case .cancelled:
                    j.status = .cancelled
                    j.finishedAt = now
                default: break
                }
            }
            if event.type == .done, let u = updated { updated = await finalize(u, done: event) }
            guard try await store.appendEvent(stored) else { return }
            metrics.eventsStored.increment()
            if !event.type.isTerminal, updated?.status == .building {
                running[job.id] = RunningJob(worker: worker, identity: job.workerIdentity, lastSeq: event.seq)
            } else {
                running[job.id] = nil
            }
            await relay(stored)
            switch event.type {
            case .failed, .cancelled:
                logger.info("job ended: \(event.type.rawValue)", metadata: ["job_id": "\(job.id)"])
                await sendControl(job.id, .init(action: .ack, seq: event.seq, workerID: worker))
            case .done where updated?.status == .ready:
                await sendControl(job.id, .init(action: .ack, seq: event.seq, workerID: worker))
            default: break
            }
        } catch {
            logger.error("cannot store event: \(error)", metadata: ["job_id": "\(job.id)"])
        }
    }

    /// `ready` needs both the `done` event and the verified result file; whichever arrives second
    /// completes the job. Returns the job as it is now.
    private func finalize(_ job: Job, done event: BuildEvent) async -> Job {
        guard job.status == .building, let sha = job.resultSha256 else { return job }
        guard event.sha256 == sha else {
            return
                (try? await store.update(job.id) {
                    $0.status = .error
                    $0.failurePhase = "upload"
                    $0.error = "the result the worker announced does not match the one it uploaded"
                    $0.retryable = true
                    $0.finishedAt = Date()
                }) ?? job
        }
        let retention = configuration.retention
        let artifacts = await finalArtifacts(job.id)
        let updated = try? await store.update(job.id) {
            $0.status = .ready
            $0.finishedAt = Date()
            $0.retentionExpiresAt = Date().addingTimeInterval(retention.seconds)
            $0.artifactIDs = artifacts
        }
        logger.info("job ready", metadata: ["job_id": "\(job.id)", "sha256": "\(sha)"])
        return updated ?? job
    }

    /// The result completed after its `done` event was stored.
    func finalizeAfterResult(_ job: Job) async {
        guard let events = try? await store.events(job: job.id, after: 0), let done = events.last(where: { $0.type == "done" }),
            let event = try? BuildEvent.decode(Array(done.data.utf8))
        else { return }
        if await finalize(job, done: event).status == .ready {
            await sendControl(job.id, .init(action: .ack, seq: done.seq, workerID: job.workerID))
        }
    }

    /// The artifacts the final attempt announced (after its `accepted`), as the job's `artifact_ids` JSON.
    func finalArtifacts(_ jobID: String) async -> String? {
        guard let events = try? await store.events(job: jobID, after: 0) else { return nil }
        let start = events.lastIndex { $0.type == BuildEvent.Kind.accepted.rawValue } ?? events.startIndex
        let ids = events[start...].filter { $0.type == BuildEvent.Kind.artifact.rawValue }.compactMap { stored -> ArtifactID? in
            guard let e = try? BuildEvent.decode(Array(stored.data.utf8)), let path = e.path, let sha = e.sha256 else { return nil }
            return ArtifactID(name: path, sha256: sha)
        }
        return (try? JSONEncoder().encode(ids)).map { String(decoding: $0, as: UTF8.self) }
    }
}
