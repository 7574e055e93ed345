import Foundation
import KilnArchive
import KilnBus
import KilnBusClient
import KilnCore
import KilnJobs
import KilnMessages
import KilnSubmission
import Logging
import NIOCore
import _NIOFileSystem

/// The gateway's side of the bus (design §3): dispatches waiting jobs FIFO to idle workers, stores
/// their events in order (asking for a replay on a gap), assembles result chunks, ends jobs whose
/// worker fell silent, and acknowledges terminal events so workers can exit.
public actor BuildCoordinator {
    let store: any JobStore
    let files: ResultFiles
    let assembler: ResultAssembler
    let senders: SenderCheck
    let sourceChunks: SourceChunkServer
    public nonisolated let hub: any LiveEventFanOut
    let client: BusClient
    let configuration: CoordinationConfiguration
    let metrics: GatewayMetrics
    let logger: Logger
    var dispatching = false
    var dispatchAgain = false
    /// The workers that announced themselves, and what they can build.
    var workers = WorkerDirectory()
    /// What a worker's event means (hot path or full path, duplicates, gaps): building jobs whose
    /// events are flowing, with their worker and last stored seq, so the next event can be stored
    /// without reading the job first. The store stays the authority: the hot path's insert checks the
    /// job is still building, and anything unexpected takes the full path.
    var intake = EventIntake()
    /// Events and requests of jobs whose dispatch is in flight, in arrival order, bounded per job.
    var holdback: DispatchHoldback
    /// Jobs whose last chunk is being checked and moved into place (one finisher per job).
    var finishingResults: Set<String> = []
    /// Which gateway ingests each job (see `Job.ingestedBy`), remembering those another gateway
    /// ingests so their workers' messages are left to it without a store read.
    var ownership: IngestionOwnership
    /// Other live gateways on the store (from the last heartbeat): stored events are announced to
    /// them only when there are any.
    var peerGateways = 0
    /// Live events of jobs other gateways ingest, for this gateway's SSE clients.
    let peerRelay: PeerEventRelay
    /// "There may be a job to dispatch": from submissions, idle workers and housekeeping, drained by
    /// one loop in `run()` (a burst of wake-ups is one pass).
    private nonisolated let dispatchWakeups: AsyncStream<Void>
    nonisolated let wakeDispatcher: AsyncStream<Void>.Continuation

    /// What is stored and relayed for an event: the gateway's own compact, single-line encoding of
    /// the fields it understood, never the worker's bytes (JSON may carry raw newlines between
    /// tokens, which would end an SSE `data:` line; unknown fields are dropped).
    static func relayable(_ event: BuildEvent) -> String { String(decoding: event.encoded(), as: UTF8.self) }

    public init(
        store: any JobStore, files: ResultFiles, hub: any LiveEventFanOut, client: BusClient, configuration: CoordinationConfiguration,
        metrics: GatewayMetrics, logger: Logger
    ) {
        self.store = store
        self.files = files
        self.assembler = ResultAssembler(files: files)
        self.senders = SenderCheck(metrics: metrics, logger: logger)
        self.sourceChunks = SourceChunkServer(
            store: store, files: files, client: client, chunkSize: configuration.sourceChunkSize,
            metrics: metrics, senders: senders)
        (dispatchWakeups, wakeDispatcher) = AsyncStream.makeStream(of: Void.self, bufferingPolicy: .bufferingNewest(1))
        self.hub = hub
        self.peerRelay = PeerEventRelay(hub: hub, store: store)
        self.client = client
        self.configuration = configuration
        self.metrics = metrics
        self.logger = logger
        self.holdback = DispatchHoldback(maxEvents: configuration.maxHeldEvents)
        self.ownership = IngestionOwnership(gateway: configuration.instanceID)
    }

    // MARK: - lifecycle

    /// Subscribes to what workers send and handles it until cancelled (`GatewayHousekeeping` runs
    /// the periodic checks).
    public func run() async throws {
        let ready = try client.subscribe(Subjects.workersReadyAll)
        let events = try client.subscribe(Subjects.eventsAll)
        let results = try client.subscribe(Subjects.resultsAll)
        let sources = try client.subscribe(Subjects.sourcesAll)
        let peerNotices = try client.subscribe(Subjects.gatewayStoredAll)
        try await client.flush()
        await recover()
        try await withThrowingTaskGroup(of: Void.self) { group in
            group.addTask { for await m in ready { await self.workerAnnounced(m) } }
            group.addTask { for await _ in self.dispatchWakeups { await self.dispatchWaiting() } }
            group.addTask { for await m in events { await self.handleEvent(m) } }
            group.addTask { for await m in results { await self.handleResultChunk(m) } }
            group.addTask { for await m in sources { await self.handleSourceRequest(m) } }
            group.addTask { [peerRelay, instanceID = configuration.instanceID] in
                for await m in peerNotices { await peerRelay.noticed(m, ownGateway: instanceID) }
            }
            try await group.next()
            group.cancelAll()
        }
    }

    /// At start: building jobs no live gateway ingests (this one's before a restart, say) become this
    /// gateway's, each with a replay request; waiting jobs are dispatched.
    func recover() async {
        await keepIngesting()
        await dispatchWaiting()
    }

    // MARK: - submission

    static func newJobID() -> String { "j" + UUID().uuidString.replacingOccurrences(of: "-", with: "").prefix(20).lowercased() }

    public func submit(_ s: BuildSubmission, triggeredBy: String? = nil, requestID: String? = nil) async throws -> Job {
        let id = Self.newJobID()
        var request = BuildRequest(jobID: id, nonce: s.nonce, repoURL: s.repoURL, repoRef: s.repoRef)
        request.skipCache = s.skipCache ? true : nil
        request.buildConfig = s.buildConfig
        request.buildOptions = s.buildOptions
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
                    // Read on NIOFileSystem's threads: never blocking file I/O on the actor (up to the
                    // inline limit, 2 MiB by default). Whatever the failure, the client's answer is the
                    // same 503 below.
                    let read = try? await FileSystem.shared.withFileHandle(forReadingAt: FilePath(path)) { handle in
                        try await handle.readToEnd(maximumSizeAllowed: .bytes(archive.size))
                    }
                    guard let read, Int64(read.readableBytes) == archive.size else {
                        throw CoordinationError(.unavailable, "the gateway lost an upload it had just stored; try again")
                    }
                    bytes = Array(read.readableBytesView)
                }
                request.sourceData = Data(bytes).base64EncodedString()
                request.sourceName = s.sourceName
            } else {
                // Workers fetch it in chunks from this file; it is deleted once the job ends.
                guard case .file(let path) = archive.storage else {
                    throw CoordinationError(.internalError, "an upload above the inline limit was not spooled to disk")
                }
                try files.adoptUpload(job: id, from: path)
                request.source = .init(sha256: archive.sha256, size: archive.size, chunkSize: configuration.sourceChunkSize, name: s.sourceName)
                request.sourceName = s.sourceName
            }
        }
        let encoded = String(decoding: try JSONEncoder().encode(request), as: UTF8.self)
        var new = Job(id: id, nonce: s.nonce, request: encoded, position: 0, queuedAt: Date(), sourceDigest: digest)
        new.maxAttempts = configuration.maxAttempts
        let asked = BuildRequestOptions(skipCache: request.skipCache, buildConfig: s.buildConfig, buildOptions: s.buildOptions)
        if asked != BuildRequestOptions(), let json = try? JSONEncoder().encode(asked) { new.options = String(decoding: json, as: UTF8.self) }
        new.triggeredBy = triggeredBy
        new.requestID = requestID
        new.updatedAt = new.queuedAt
        let job = try await store.enqueue(new)
        logger.info("job queued", metadata: ["job_id": "\(id)"])
        wakeDispatcher.yield()
        return job
    }

    public func cancel(_ id: String, by principal: String? = nil, reason: String? = nil) async throws -> Job {
        guard let (job, transition) = try await apply(.cancelRequested(by: principal, reason: reason), to: id) else {
            throw CoordinationError.noJob(id)
        }
        if let refusal = transition.refusal { throw CoordinationError(.conflict, "job \(id): \(refusal)") }
        if job.status == .cancelled {
            logger.info("waiting job cancelled", metadata: ["job_id": "\(id)"])
        } else {
            logger.info("cancel sent to worker", metadata: ["job_id": "\(id)", "worker_id": "\(job.workerID ?? "")"])
        }
        return job
    }

    /// A worker's request is answered only on its own inbox (`BusRoles.workerInboxes`): the reply
    /// subject is the requester's choice, and the gateway may publish where a worker may not (a job's
    /// control subject, say) — nats-server does not restrict reply subjects. Anything else is dropped
    /// unanswered and counted.
    func answersOnlyTheWorkersInbox(_ message: BusMessage) -> Bool {
        guard let reply = message.reply else { return false }
        if let worker = Subjects.publishingWorker(of: message.subject), BusRoles.isInbox(reply, ofWorker: worker) { return true }
        metrics.busMessagesRejected(.foreignReplySubject)
        logger.warning("dropped a request whose reply subject is not its worker's inbox", metadata: ["subject": "\(message.subject)"])
        return false
    }

    func handleSourceRequest(_ message: BusMessage) async {
        guard answersOnlyTheWorkersInbox(message), let jobID = BusMessageParsing.jobID(subject: message.subject) else { return }
        if holdback.isHolding(jobID) {
            // The worker asked before its acceptance was recorded: answered once it is.
            if !holdback.hold(request: message, of: jobID) { metrics.busMessagesRejected(.heldBackOverflow) }
            return
        }
        guard await !isIngestedElsewhere(jobID) else { return }
        await sourceChunks.answer(message, jobID: jobID)
    }

    // MARK: - periodic

    /// Building jobs whose worker has been silent for 3 heartbeats end their attempt: another one
    /// if any is left, else a retryable worker error. A waiting job gets another dispatch attempt.
    func endSilentJobs() async {
        let limit = configuration.workerSilenceLimit.seconds
        do {
            for job in try await store.jobs(status: .building)
            where job.ingestedBy == configuration.instanceID
                && Date().timeIntervalSince(job.lastSeenAt ?? job.startedAt ?? Date()) > limit
            {
                let last = try await store.lastSeq(job: job.id)
                intake.forget(job.id)
                guard let (updated, transition) = try await apply(.workerSilent(lastSeq: last, limitSeconds: Int(limit)), to: job.id),
                    transition.refusal == nil
                else { continue }
                logger.warning(
                    updated.status == .waiting ? "worker silent; job retried" : "worker silent; job failed",
                    metadata: ["job_id": "\(job.id)", "worker_id": "\(job.workerID ?? "")"])
            }
            if try await store.oldestWaiting() != nil { wakeDispatcher.yield() }
        } catch {
            // The next pass (every second) tries again.
            logger.warning("cannot check for silent workers: \(error)")
        }
    }

    func sendControl(_ jobID: String, _ message: ControlMessage) async {
        do {
            try await client.publish(Subjects.control(jobID), payload: Array(try JSONEncoder().encode(message)))
        } catch {
            // Not lost for good: a worker resends an unacknowledged terminal event, and a worker told to
            // stop is told again by the next event it sends to a job that is not its own.
            logger.warning("cannot send \(message.action.rawValue) to the worker: \(error)", metadata: ["job_id": "\(jobID)"])
        }
    }
}

extension Duration {
    var timeAmount: TimeAmount { .nanoseconds(nanoseconds) }
}
