import Foundation
import NIOPosix
import KilnArchive
import KilnBus
import KilnBusClient
import KilnMessages
import Logging
import NIOCore

/// The gateway's side of the bus (design §3): dispatches waiting jobs FIFO to idle workers, stores
/// their events in order (asking for a replay on a gap), assembles result chunks, ends jobs whose
/// worker fell silent, and acknowledges terminal events so workers can exit.
public actor BuildCoordinator {
    let store: any JobStore
    let files: ResultFiles
    let assembler: ResultAssembler
    public nonisolated let hub: EventHub
    let client: BusClient
    let configuration: GatewayConfiguration
    let metrics: GatewayMetrics
    let logger: Logger
    private var dispatching = false
    private var dispatchAgain = false
    private var lastReplay: [String: ContinuousClock.Instant] = [:]
    /// Building jobs whose events are flowing: their worker and last stored seq, so the next event
    /// can be stored without reading the job first. The store stays the authority: the hot path's
    /// insert checks the job is still building, and anything unexpected takes the full path.
    private var running: [String: RunningJob] = [:]
    /// Events of jobs whose dispatch request is in flight, in arrival order.
    private var early: [String: [(BuildEvent, BusMessage)]] = [:]
    /// Source requests that overtook their worker's acceptance, answered once it is recorded.
    private var earlySourceRequests: [String: [BusMessage]] = [:]
    /// Jobs whose last chunk is being checked and moved into place (one finisher per job).
    private var finishingResults: Set<String> = []
    /// "There may be a job to dispatch": from submissions, idle workers and housekeeping, drained by
    /// one loop in `run()` (a burst of wake-ups is one pass).
    private nonisolated let dispatchWakeups: AsyncStream<Void>
    private nonisolated let wakeDispatcher: AsyncStream<Void>.Continuation

    struct RunningJob {
        let worker: String
        /// The broker-authenticated sender bound to the job, if any.
        let identity: String?
        var lastSeq: Int
    }

    /// What is stored and relayed for an event: the gateway's own compact, single-line encoding of
    /// the fields it understood, never the worker's bytes (JSON may carry raw newlines between
    /// tokens, which would end an SSE `data:` line; unknown fields are dropped).
    static func relayable(_ event: BuildEvent) -> String { String(decoding: event.encoded(), as: UTF8.self) }

    /// Whether a message about `job` comes from the identity bound at acceptance. Without one (a
    /// broker that does not authenticate users) only the worker id inside the message can be checked.
    private func fromBoundSender(_ message: BusMessage, identity: String?, job: String, what: String) -> Bool {
        guard let identity else { return true }
        let sender = message.headers?[BusHeader.senderHeader]
        if sender == identity { return true }
        metrics.busMessagesRejected(.wrongSender)
        logger.warning("dropped \(what) from '\(sender ?? "nobody")': the job belongs to '\(identity)'",
                       metadata: ["job_id": "\(job)", "connection": "\(message.headers?[BusHeader.senderConnectionHeader] ?? "?")"])
        return false
    }

    public init(store: any JobStore, files: ResultFiles, hub: EventHub, client: BusClient, configuration: GatewayConfiguration,
                metrics: GatewayMetrics, logger: Logger) {
        self.store = store
        self.files = files
        self.assembler = ResultAssembler(files: files)
        (dispatchWakeups, wakeDispatcher) = AsyncStream.makeStream(of: Void.self, bufferingPolicy: .bufferingNewest(1))
        self.hub = hub
        self.client = client
        self.configuration = configuration
        self.metrics = metrics
        self.logger = logger
    }

    // MARK: - lifecycle

    /// Subscribes to what workers send and handles it until cancelled (`GatewayHousekeeping` runs
    /// the periodic checks).
    public func run() async throws {
        let ready = try client.subscribe(Subjects.workersReady)
        let events = try client.subscribe("kiln.build.*.events")
        let results = try client.subscribe("kiln.build.*.result")
        let sources = try client.subscribe("kiln.build.*.source")
        try await client.flush()
        await recover()
        try await withThrowingTaskGroup(of: Void.self) { group in
            group.addTask { for await _ in ready { self.wakeDispatcher.yield() } }
            group.addTask { for await _ in self.dispatchWakeups { await self.dispatchWaiting() } }
            group.addTask { for await m in events { await self.handleEvent(m) } }
            group.addTask { for await m in results { await self.handleResultChunk(m) } }
            group.addTask { for await m in sources { await self.handleSourceRequest(m) } }
            try await group.next()
            group.cancelAll()
        }
    }

    /// After a restart: building jobs get a replay request (events sent while we were down) and a
    /// fresh silence clock; waiting jobs are dispatched.
    func recover() async {
        do {
            for job in try await store.jobs(status: .building) {
                let last = try await store.lastSeq(job: job.id)
                try await store.update(job.id) { $0.lastSeenAt = Date() }
                await sendControl(job.id, .init(action: .replay, fromSeq: last + 1, workerID: job.workerID))
                logger.info("recovering building job; replay requested", metadata: ["job_id": "\(job.id)", "from_seq": "\(last + 1)"])
            }
        } catch {
            logger.error("recovery failed: \(error)")
        }
        await dispatchWaiting()
    }

    // MARK: - submission

    public func submit(_ s: BuildSubmission, triggeredBy: String? = nil) async throws -> Job {
        let id = "j" + UUID().uuidString.replacingOccurrences(of: "-", with: "").prefix(20).lowercased()
        var request = BuildRequest(jobID: id, nonce: s.nonce, repoURL: s.repoURL, repoRef: s.repoRef)
        var digest: String?
        if let archive = s.archive {
            digest = archive.sha256
            if archive.size <= Int64(configuration.inlineSourceLimit) {
                // Inline: the stored request carries the source; no file to keep.
                let bytes: [UInt8]
                switch archive.storage {
                case .memory(let b): bytes = b
                case .file(let path):
                    defer { unlink(path) }
                    guard let data = FileManager.default.contents(atPath: path), data.count == archive.size else {
                        throw GatewayError(.serviceUnavailable, "the gateway lost an upload it had just stored; try again")
                    }
                    bytes = Array(data)
                }
                request.sourceData = Data(bytes).base64EncodedString()
                request.sourceName = s.sourceName
            } else {
                // Workers fetch it in chunks from this file; it is deleted once the job ends.
                guard case .file(let path) = archive.storage else {
                    throw GatewayError(.internalServerError, "an upload above the inline limit was not spooled to disk")
                }
                try files.adoptUpload(job: id, from: path)
                request.source = .init(sha256: archive.sha256, size: archive.size, chunkSize: configuration.sourceChunkSize, name: s.sourceName)
                request.sourceName = s.sourceName
            }
        }
        let encoded = String(decoding: try JSONEncoder().encode(request), as: UTF8.self)
        var new = Job(id: id, nonce: s.nonce, request: encoded, position: 0, queuedAt: Date(), sourceDigest: digest)
        new.triggeredBy = triggeredBy
        let job = try await store.enqueue(new)
        logger.info("job queued", metadata: ["job_id": "\(id)"])
        wakeDispatcher.yield()
        return job
    }

    public func cancel(_ id: String) async throws -> Job {
        guard let job = try await store.job(id) else { throw GatewayError.notFound(id) }
        switch job.status {
        case .waiting:
            let updated = try await store.update(id) {
                $0.status = .cancelled
                $0.finishedAt = Date()
            }
            await synthesize(id, .cancelled) { _ in }
            logger.info("waiting job cancelled", metadata: ["job_id": "\(id)"])
            return updated ?? job
        case .building:
            await sendControl(id, .init(action: .cancel, workerID: job.workerID))
            logger.info("cancel sent to worker", metadata: ["job_id": "\(id)", "worker_id": "\(job.workerID ?? "")"])
            return job
        case .ready, .error, .cancelled:
            throw GatewayError(.conflict, "job \(id) is already \(job.status.rawValue)")
        }
    }

    // MARK: - dispatch

    /// Offers waiting jobs, oldest first, until nobody takes one.
    func dispatchWaiting() async {
        if dispatching {
            dispatchAgain = true
            return
        }
        dispatching = true
        defer { dispatching = false }
        repeat {
            dispatchAgain = false
            while let job = try? await store.oldestWaiting() {
                guard await offer(job) else { break }
            }
        } while dispatchAgain
    }

    /// One dispatch attempt; true if the job was placed (or settled) and the next can be tried.
    private func offer(_ job: Job) async -> Bool {
        // A worker's first events can overtake its acceptance on the way here; they wait until the
        // assignment is recorded instead of being dropped as coming from an unknown worker.
        early[job.id] = []
        let placed = await offerOnce(job)
        while let queue = early[job.id], let (event, message) = queue.first {
            early[job.id] = Array(queue.dropFirst())
            await handleEvent(event, message)
        }
        while let queue = earlySourceRequests[job.id], let message = queue.first {
            earlySourceRequests[job.id] = Array(queue.dropFirst())
            await answerSourceRequest(message, jobID: job.id)
        }
        earlySourceRequests[job.id] = nil
        early[job.id] = nil
        return placed
    }

    private func offerOnce(_ job: Job) async -> Bool {
        let start = ContinuousClock.now
        let reply: BusMessage
        do {
            reply = try await client.request(Subjects.buildRequest, payload: Array(job.request.utf8), timeout: configuration.ackTimeout.timeAmount)
        } catch BusClientError.noResponders {
            return false
        } catch {
            logger.warning("dispatch got no acceptance in time; will retry", metadata: ["job_id": "\(job.id)", "error": "\(error)"])
            _ = try? await store.update(job.id) { $0.dispatchAttempts += 1 }
            return false
        }
        guard let answer = try? JSONDecoder().decode(DispatchReply.self, from: Data(reply.payloadBytes)) else { return true }
        guard answer.accepted, let worker = answer.workerID else {
            if answer.code == 400 {
                _ = try? await store.update(job.id) {
                    $0.status = .error
                    $0.failurePhase = "dispatch"
                    $0.error = "a worker rejected the request: \(answer.message ?? "")"
                    $0.finishedAt = Date()
                }
            }
            return true
        }
        metrics.dispatchLatency.recordNanoseconds((ContinuousClock.now - start).nanoseconds)
        let updated = try? await store.update(job.id) { j in
            guard j.status == .waiting else { return }
            j.status = .building
            j.workerID = worker
            j.workerIdentity = reply.headers?[BusHeader.senderHeader]
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
        return true
    }

    // MARK: - events

    func handleEvent(_ message: BusMessage) async {
        guard let event = try? BuildEvent.decode(message.payloadBytes) else { return }
        if early[event.jobID] != nil {
            // Its dispatch is still being settled (see `offer`): kept, in order, until then.
            early[event.jobID]?.append((event, message))
            return
        }
        await handleEvent(event, message)
    }

    private func handleEvent(_ event: BuildEvent, _ message: BusMessage) async {
        if let known = running[event.jobID], known.worker == event.workerID, known.lastSeq + 1 == event.seq, !event.type.isTerminal,
           known.identity == nil || message.headers?[BusHeader.senderHeader] == known.identity {
            // The hot path (logs, heartbeats, phases of a running build): one transaction, no reads.
            let stored = StoredEvent(jobID: event.jobID, seq: event.seq, type: event.type.rawValue, data: Self.relayable(event))
            do {
                if try await store.appendBuildingEvent(stored, phase: event.type == .phase ? event.name : nil, seenAt: Date()) {
                    running[event.jobID]?.lastSeq = event.seq
                    metrics.eventsStored.increment()
                    hub.publish(stored)
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
        guard let job = try? await store.job(event.jobID) else { return }
        guard fromBoundSender(message, identity: job.workerIdentity, job: job.id, what: "a \(event.type.rawValue) event") else { return }
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
            let stored = StoredEvent(jobID: job.id, seq: event.seq, type: event.type.rawValue, data: Self.relayable(event))
            // Job state first, event second: whoever sees a terminal event finds the job already terminal
            // (a client that downloads right after `done` gets the result, not a 409).
            let now = Date()
            var updated = try await store.update(job.id) { j in
                j.lastSeenAt = now
                if event.type == .phase, let name = event.name { j.phase = name }
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
            hub.publish(stored)
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
            return (try? await store.update(job.id) {
                $0.status = .error
                $0.failurePhase = "upload"
                $0.error = "the result the worker announced does not match the one it uploaded"
                $0.retryable = true
                $0.finishedAt = Date()
            }) ?? job
        }
        let retention = configuration.retention
        let updated = try? await store.update(job.id) {
            $0.status = .ready
            $0.finishedAt = Date()
            $0.retentionExpiresAt = Date().addingTimeInterval(retention.seconds)
        }
        logger.info("job ready", metadata: ["job_id": "\(job.id)", "sha256": "\(sha)"])
        return updated ?? job
    }

    /// The result completed after its `done` event was stored.
    private func finalizeAfterResult(_ job: Job) async {
        guard let events = try? await store.events(job: job.id, after: 0), let done = events.last(where: { $0.type == "done" }),
              let event = try? BuildEvent.decode(Array(done.data.utf8)) else { return }
        if await finalize(job, done: event).status == .ready {
            await sendControl(job.id, .init(action: .ack, seq: done.seq, workerID: job.workerID))
        }
    }

    // MARK: - results

    struct Ack: Encodable {
        var ok: Bool
        var code: Int?
        var message: String?
    }

    func handleResultChunk(_ message: BusMessage) async {
        guard let reply = message.reply else { return }
        func answer(_ ack: Ack) async { try? await client.publish(reply, payload: Array((try? JSONEncoder().encode(ack)) ?? Data())) }
        let h = message.headers ?? [:]
        let bytes = message.payloadBytes
        let chunk: BusMessageParsing.ResultChunk
        switch BusMessageParsing.resultChunk(subject: message.subject, headers: message.headers, payloadCount: bytes.count,
                                             maxSize: configuration.maxResultBytes) {
        case .success(let c): chunk = c
        case .failure(.malformed(let why)):
            await answer(Ack(ok: false, code: 400, message: why))
            return
        case .failure(.outOfRange(let why)):
            metrics.busMessagesRejected(.badChunk)
            logger.warning("\(why)", metadata: ["subject": "\(message.subject)"])
            await answer(Ack(ok: false, code: 400, message: why))
            return
        }
        let (jobID, index, count, sha, size, offset) = (chunk.jobID, chunk.index, chunk.count, chunk.sha256, chunk.size, chunk.offset)
        guard let job = try? await store.job(jobID) else { await answer(Ack(ok: false, code: 404, message: "unknown job")); return }
        guard fromBoundSender(message, identity: job.workerIdentity, job: jobID, what: "a result chunk") else {
            await answer(Ack(ok: false, code: 403, message: "not the worker assigned to this job"))
            return
        }
        guard job.workerID == h[ResultChunkHeaders.workerID], job.status == .building else {
            await answer(Ack(ok: false, code: 403, message: "not the worker assigned to this job"))
            if let w = h[ResultChunkHeaders.workerID], w != job.workerID { await sendControl(jobID, .init(action: .cancel, workerID: w)) }
            return
        }
        do {
            // Off the actor: other jobs' events go on while this chunk is written.
            try await assembler.write(job: jobID, offset: offset, bytes: bytes)
            try await store.recordChunk(job: jobID, index: index)
            _ = try await store.update(jobID) { $0.lastSeenAt = Date() }
            // Chunks come several at a time (and again when an ack is slow): the one that completes
            // the set finishes the result; any other that sees it complete just acknowledges.
            if try await store.chunks(job: jobID).count == count, finishingResults.insert(jobID).inserted {
                defer { finishingResults.remove(jobID) }
                try await store.clearChunks(job: jobID)
                guard try await assembler.finish(job: jobID, sha256: sha, size: size) else {
                    await answer(Ack(ok: false, code: 422, message: "the assembled result does not match sha256 \(sha)"))
                    return
                }
                if let updated = try await store.update(jobID, { $0.resultSha256 = sha; $0.resultSize = size }) {
                    await finalizeAfterResult(updated)
                }
            }
            await answer(Ack(ok: true))
        } catch {
            logger.error("cannot store result chunk: \(error)", metadata: ["job_id": "\(jobID)"])
            await answer(Ack(ok: false, code: 500, message: "the gateway could not store the chunk"))
        }
    }

    func handleSourceRequest(_ message: BusMessage) async {
        guard message.reply != nil, let jobID = BusMessageParsing.jobID(subject: message.subject) else { return }
        if early[jobID] != nil {
            // The worker asked before its acceptance was recorded: answer once it is (bounded like the events).
            if earlySourceRequests[jobID, default: []].count < 64 { earlySourceRequests[jobID, default: []].append(message) }
            return
        }
        await answerSourceRequest(message, jobID: jobID)
    }

    private func answerSourceRequest(_ message: BusMessage, jobID: String) async {
        guard let reply = message.reply else { return }
        guard let (_, index) = BusMessageParsing.sourceRequest(subject: message.subject, headers: message.headers),
              let size = files.uploadSize(job: jobID) else {
            try? await client.publish(reply, payload: [UInt8](), headers: ["status": "404"])
            return
        }
        // Where the broker authenticates users, a job's source goes to the worker that accepted it only.
        // (A message stamped by the broker means users are authenticated: then a job nobody accepted has no source to give.)
        let job = try? await store.job(jobID)
        if message.headers?[BusHeader.senderHeader] != nil || job?.workerIdentity != nil {
            guard let job, job.status == .building, fromBoundSender(message, identity: job.workerIdentity, job: jobID, what: "a source request") else {
                try? await client.publish(reply, payload: [UInt8](), headers: ["status": "403"])
                return
            }
        }
        guard let offset = BusMessageParsing.sourceChunkOffset(index: index, chunkSize: configuration.sourceChunkSize, size: size),
              let bytes = try? await NIOThreadPool.singleton.runIfActive({ [files, chunkSize = configuration.sourceChunkSize] in
                  try files.readUpload(job: jobID, offset: offset, length: chunkSize) // a disk read: not on the actor
              }) else {
            metrics.busMessagesRejected(.badChunk)
            try? await client.publish(reply, payload: [UInt8](), headers: ["status": "416"])
            return
        }
        try? await client.publish(reply, payload: bytes, headers: ["status": "200"])
    }

    // MARK: - periodic

    /// Building jobs whose worker has been silent for 3 heartbeats end as a retryable worker error;
    /// a waiting job gets another dispatch attempt.
    func endSilentJobs() async {
        let limit = configuration.workerSilenceLimit.seconds
        if let building = try? await store.jobs(status: .building) {
            for job in building where Date().timeIntervalSince(job.lastSeenAt ?? job.startedAt ?? Date()) > limit {
                let updated = try? await store.update(job.id) { j in
                    guard j.status == .building else { return }
                    j.status = .error
                    j.failurePhase = "worker"
                    j.error = "worker \(j.workerID ?? "?") went silent for more than \(Int(limit)) s"
                    j.retryable = true
                    j.suggestedAction = "submit the build again"
                    j.finishedAt = Date()
                }
                running[job.id] = nil
                if updated?.status == .error {
                    logger.warning("worker silent; job failed", metadata: ["job_id": "\(job.id)", "worker_id": "\(job.workerID ?? "")"])
                    await synthesize(job.id, .failed) {
                        $0.failurePhase = "worker"
                        $0.message = updated?.error
                        $0.retryable = true
                        $0.suggestedAction = "submit the build again"
                    }
                    await sendControl(job.id, .init(action: .cancel, workerID: job.workerID))
                }
            }
        }
        if (try? await store.oldestWaiting()) != nil { wakeDispatcher.yield() }
    }

    /// A terminal event the gateway itself writes (cancel while waiting, silent worker).
    private func synthesize(_ jobID: String, _ type: BuildEvent.Kind, _ configure: (inout BuildEvent) -> Void) async {
        guard let last = try? await store.lastSeq(job: jobID) else { return }
        var event = BuildEvent(jobID: jobID, seq: last + 1, type: type)
        configure(&event)
        let stored = StoredEvent(jobID: jobID, seq: event.seq, type: type.rawValue, data: String(decoding: event.encoded(), as: UTF8.self))
        if (try? await store.appendEvent(stored)) == true { hub.publish(stored) }
    }

    private func sendControl(_ jobID: String, _ message: ControlMessage) async {
        try? await client.publish(Subjects.control(jobID), payload: Array((try? JSONEncoder().encode(message)) ?? Data()))
    }
}

extension Duration {
    var seconds: Double { Double(components.seconds) + Double(components.attoseconds) / 1e18 }
    var timeAmount: TimeAmount { .nanoseconds(Int64(seconds * 1e9)) }
    var nanoseconds: Int64 { Int64(seconds * 1e9) }
}
