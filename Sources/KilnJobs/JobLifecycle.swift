import Foundation
import KilnCore
import KilnMessages

/// Why a job (or one attempt of it) ended in error: the same four fields on the job and on the
/// terminal event clients receive, set in one place.
public struct JobFailure: Sendable, Equatable {
    public var phase: String
    public var message: String
    public var retryable: Bool?
    public var suggestedAction: String?

    public init(phase: String, message: String, retryable: Bool? = nil, suggestedAction: String? = nil) {
        self.phase = phase
        self.message = message
        self.retryable = retryable
        self.suggestedAction = suggestedAction
    }

    func record(on job: inout Job) {
        job.failurePhase = phase
        job.error = message
        job.retryable = retryable
        job.suggestedAction = suggestedAction
    }

    /// The fields of a `failed` event that say the same.
    public func record(on event: inout BuildEvent) {
        event.failurePhase = phase
        event.message = message
        event.retryable = retryable
        event.suggestedAction = suggestedAction
    }
}

/// A job's life (design §4) as a pure state machine, in the way of the broker's
/// `ConnectionStateMachine`: each input is applied to the job as stored — inside the store's
/// transaction, so two gateways or two reentrant calls never act on a stale copy — and returns what
/// the I/O layer (`BuildCoordinator`) must do next. Nothing here reads a clock, a store or a socket;
/// every status the gateway writes is written here.
///
///     waiting ──offer accepted──▶ building ──done + result──▶ ready
///        │  ▲                        │ ├──failed / mismatch──▶ error
///        │  └──attempt ended (retry)─┘ ├──silent, no attempt left──▶ error
///        │                             └──cancelled (worker)──▶ cancelled
///        ├──cancel──▶ cancelled
///        └──refused / undispatchable──▶ error
///
/// Terminal states take no input but a duplicate's acknowledgement: an input that does not apply
/// to the job's state is refused with the reason, and the job is left as it was.
public struct JobLifecycle: Sendable {
    /// The time the input happened (injected: tests and replays decide it).
    public var now: Date
    /// How long a ready job's result is kept.
    public var retention: TimeInterval
    /// The gateway applying the input (the one that ingests the job once it is accepted).
    public var gateway: String

    public init(now: Date, retention: TimeInterval, gateway: String) {
        self.now = now
        self.retention = retention
        self.gateway = gateway
    }

    public enum Input: Sendable, Equatable {
        /// A worker accepted the gateway's offer (its broker identity, when the bus authenticates).
        case offerAccepted(worker: String, identity: String?)
        /// Nobody answered the offer in time: counted, the job keeps waiting.
        case offerUnanswered
        /// The job can never be dispatched: a worker refused its request as malformed, or no worker on
        /// the farm offers what it needs.
        case undispatchable(JobFailure)
        /// `POST /build/{id}/cancel`.
        case cancelRequested(by: String?, reason: String?)
        /// The job's worker's next event in sequence but `done` (the caller has checked sender, worker
        /// and seq).
        case workerEvent(BuildEvent)
        /// The job's worker's `done`, with the artifacts its attempt announced (read from the stored
        /// events, all of which precede it).
        case workerDone(BuildEvent, artifacts: [ArtifactID])
        /// The job's worker said nothing for longer than the silence limit; `lastSeq` is the last
        /// stored event.
        case workerSilent(lastSeq: Int, limitSeconds: Int)
        /// Every result chunk arrived and the assembled file matched its digest.
        case resultStored(sha256: String, size: Int64)
        /// The worker showed it is alive (a result chunk; a gateway adopting the job).
        case workerSeen
        /// A ready job's result passed its retention and is deleted (the job stays, without it).
        case resultExpired
    }

    public enum Action: Sendable, Equatable {
        /// Store and relay the worker's event of this input, as it came.
        case storeWorkerEvent
        /// Store and relay an event the gateway writes at `seq` (a held `done`, a retry note).
        case storeEvent(BuildEvent)
        /// Store and relay a terminal event in the gateway's words, after the last stored one.
        case appendFinalEvent(BuildEvent.Kind, JobFailure?)
        /// Acknowledge the worker's terminal event (the worker may exit).
        case acknowledge(seq: Int, worker: String)
        /// Tell this worker to stop building the job.
        case stopWorker(String)
        /// The job is waiting again: a dispatch pass may place it.
        case wakeDispatcher
        /// A new attempt starts: result chunks of the old one are void.
        case clearResultChunks
    }

    public enum Refusal: Error, Sendable, Equatable, CustomStringConvertible {
        /// The input applies only to a job in another state.
        case wrongState(Job.Status)
        /// The job has ended; nothing changes it any more.
        case ended(Job.Status)
        /// An event from a worker other than the job's.
        case notTheJobsWorker
        /// The stored request cannot be re-issued for another attempt.
        case unreadableRequest
        /// A `done` came as `workerEvent`: it needs the attempt's artifacts (`workerDone`).
        case artifactsUnread

        public var description: String {
            switch self {
            case .wrongState(let s): "the job is \(s.rawValue)"
            case .ended(let s): "the job is already \(s.rawValue)"
            case .notTheJobsWorker: "not the worker assigned to the job"
            case .unreadableRequest: "the job's stored request is unreadable"
            case .artifactsUnread: "a done event without the attempt's artifacts"
            }
        }
    }

    /// What applying an input did: the actions to perform, or why nothing changed (with any action
    /// still owed, e.g. stopping a worker whose acceptance came too late).
    public struct Transition: Sendable, Equatable {
        public var actions: [Action]
        public var refusal: Refusal?

        public init(actions: [Action], refusal: Refusal?) {
            self.actions = actions
            self.refusal = refusal
        }

        static func refused(_ why: Refusal, _ actions: [Action] = []) -> Transition { Transition(actions: actions, refusal: why) }
        static func applied(_ actions: [Action]) -> Transition { Transition(actions: actions, refusal: nil) }
    }

    /// The failure phases whose retryable failures are another attempt's business, not the job's
    /// end: the worker, a fetch, detection, the upload — never the build itself.
    public static let retriedPhases: Set<String> = ["worker", "fetch", "detect", "upload"]

    public static func isRetriable(_ event: BuildEvent) -> Bool {
        event.type == .failed && event.retryable == true && retriedPhases.contains(event.failurePhase ?? "")
    }

    // MARK: - transitions

    public func apply(_ input: Input, to job: inout Job) -> Transition {
        switch input {
        case .offerAccepted(let worker, let identity): return offerAccepted(&job, worker: worker, identity: identity)
        case .offerUnanswered:
            guard job.status == .waiting else { return .refused(.wrongState(job.status)) }
            job.dispatchAttempts += 1
            return .applied([])
        case .undispatchable(let failure):
            guard job.status == .waiting else { return .refused(.wrongState(job.status)) }
            end(&job, .error, failure)
            return .applied([.appendFinalEvent(.failed, failure)])
        case .cancelRequested(let by, let reason): return cancelRequested(&job, by: by, reason: reason)
        case .workerEvent(let event): return workerEvent(&job, event, artifacts: nil)
        case .workerDone(let event, let artifacts): return workerEvent(&job, event, artifacts: artifacts)
        case .workerSilent(let lastSeq, let limit): return workerSilent(&job, lastSeq: lastSeq, limitSeconds: limit)
        case .resultStored(let sha256, let size): return resultStored(&job, sha256: sha256, size: size)
        case .workerSeen:
            guard job.status == .building else { return .refused(.wrongState(job.status)) }
            job.lastSeenAt = now
            return .applied([])
        case .resultExpired:
            guard job.status == .ready else { return .refused(.wrongState(job.status)) }
            job.resultSha256 = nil
            job.resultSize = nil
            return .applied([])
        }
    }

    private func offerAccepted(_ job: inout Job, worker: String, identity: String?) -> Transition {
        // Cancelled, or placed by another offer meanwhile: this worker must not build it.
        guard job.status == .waiting else { return .refused(.wrongState(job.status), [.stopWorker(worker)]) }
        job.status = .building
        job.workerID = worker
        job.workerIdentity = identity
        job.ingestedBy = gateway
        job.startedAt = now
        job.lastSeenAt = now
        job.dispatchAttempts += 1
        return .applied([])
    }

    private func cancelRequested(_ job: inout Job, by principal: String?, reason: String?) -> Transition {
        switch job.status {
        case .ready, .error, .cancelled: return .refused(.ended(job.status))
        case .waiting:
            recordCancellation(&job, by: principal, reason: reason)
            end(&job, .cancelled, nil)
            return .applied([.appendFinalEvent(.cancelled, nil)])
        case .building:
            // The worker ends it (its `cancelled` event); until then the job builds on.
            recordCancellation(&job, by: principal, reason: reason)
            return .applied(job.workerID.map { [.stopWorker($0)] } ?? [])
        }
    }

    private func recordCancellation(_ job: inout Job, by principal: String?, reason: String?) {
        job.cancelRequestedAt = job.cancelRequestedAt ?? now
        job.cancelledBy = job.cancelledBy ?? principal
        job.cancellationReason = job.cancellationReason ?? reason
    }

    private func workerEvent(_ job: inout Job, _ event: BuildEvent, artifacts: [ArtifactID]?) -> Transition {
        guard !job.status.isTerminal else { return .refused(.ended(job.status)) }
        guard job.status == .building else { return .refused(.wrongState(job.status)) }
        guard let worker = event.workerID, worker == job.workerID else { return .refused(.notTheJobsWorker) }
        job.lastSeenAt = now
        switch event.type {
        case .phase:
            if let name = event.name { job.phase = name }
        case .accepted, .artifact, .log, .heartbeat:
            break
        case .failed where Self.isRetriable(event) && job.attempt < job.maxAttempts:
            // Not the build's fault: this attempt ends (its worker may exit), the job runs again.
            let why = "\(event.failurePhase ?? "?") failed on worker \(worker): \(event.message ?? "")"
            return nextAttempt(&job, noteSeq: event.seq, reason: why, learntToolchain: event.requires, then: [.acknowledge(seq: event.seq, worker: worker)])
        case .failed:
            recordOutcome(&job, of: event)
            end(
                &job, .error,
                JobFailure(phase: event.failurePhase ?? "build", message: event.message ?? "", retryable: event.retryable, suggestedAction: event.suggestedAction))
            return .applied([.storeWorkerEvent, .acknowledge(seq: event.seq, worker: worker)])
        case .cancelled:
            recordOutcome(&job, of: event)
            end(&job, .cancelled, nil)
            return .applied([.storeWorkerEvent, .acknowledge(seq: event.seq, worker: worker)])
        case .done:
            guard let artifacts else { return .refused(.artifactsUnread) }
            if let held = job.heldDone, held == event.encoded().stringValue { return .applied([]) }  // a resend while held
            recordOutcome(&job, of: event)
            job.artifactIDs = JSONText.encode(artifacts)
            // `ready` needs the result too: without it the `done` is held on the job (not stored, so no
            // client sees `done` before the result can be downloaded) until the last chunk lands.
            guard let stored = job.resultSha256 else {
                job.heldDone = event.encoded().stringValue
                return .applied([])
            }
            return complete(&job, done: event, resultSha256: stored, storing: .storeWorkerEvent)
        }
        return .applied([.storeWorkerEvent])
    }

    /// What a terminal event says about the build beyond its status: the commit and tree a
    /// repository build checked out, a rebuild's verdict, what the fetch phase used.
    private func recordOutcome(_ job: inout Job, of event: BuildEvent) {
        if job.sourceDigest == nil, let commit = event.sourceCommit, let tree = event.sourceTree,
            Hex.isLowercase(commit, bytes: 20), Hex.isLowercase(tree, bytes: 20)
        {
            job.sourceDigest = commit
            job.sourceTree = tree
        }
        if event.type == .done, job.rebuildOf != nil, let reproducible = event.reproducible {
            job.reproducible = reproducible
            let names = (event.differingArtifacts ?? []).prefix(1000).map { String($0.prefix(4096)) }
            job.differingArtifacts = JSONText.encode(Array(names))
        }
        if let summary = event.cacheSummary { job.cacheSummary = JSONText.encode(summary) }
    }

    private func workerSilent(_ job: inout Job, lastSeq: Int, limitSeconds: Int) -> Transition {
        guard job.status == .building else { return .refused(.wrongState(job.status)) }
        let worker = job.workerID ?? "?"
        let why = "worker \(worker) went silent for more than \(limitSeconds) s"
        let stop: [Action] = job.workerID.map { [.stopWorker($0)] } ?? []
        if job.attempt < job.maxAttempts {
            let retried = nextAttempt(&job, noteSeq: lastSeq + 1, reason: why, learntToolchain: nil, then: stop)
            if retried.refusal == nil { return retried }
        }
        let failure = JobFailure(phase: "worker", message: why, retryable: true, suggestedAction: "submit the build again")
        end(&job, .error, failure)
        return .applied([.appendFinalEvent(.failed, failure)] + stop)
    }

    private func resultStored(_ job: inout Job, sha256: String, size: Int64) -> Transition {
        guard job.status == .building else { return .refused(.wrongState(job.status)) }
        job.resultSha256 = sha256
        job.resultSize = size
        job.lastSeenAt = now
        guard let held = job.heldDone, let done = try? BuildEvent.decode(Array(held.utf8)) else {
            // An unreadable held `done` cannot happen (the gateway encoded it); the worker resends it.
            assert(job.heldDone == nil, "a held done event the gateway cannot read back")
            return .applied([])
        }
        job.heldDone = nil
        return complete(&job, done: done, resultSha256: sha256, storing: .storeEvent(done))
    }

    /// `done` and the result are both in: ready when the result is the one the `done` announced.
    private func complete(_ job: inout Job, done: BuildEvent, resultSha256: String, storing: Action) -> Transition {
        let worker = done.workerID ?? job.workerID ?? ""
        guard done.sha256 == resultSha256 else {
            let failure = JobFailure(
                phase: "upload", message: "the result the worker announced does not match the one it uploaded", retryable: true,
                suggestedAction: "submit the build again")
            end(&job, .error, failure)
            return .applied([.appendFinalEvent(.failed, failure), .acknowledge(seq: done.seq, worker: worker)])
        }
        job.status = .ready
        job.finishedAt = now
        job.retentionExpiresAt = now.addingTimeInterval(retention)
        return .applied([storing, .acknowledge(seq: done.seq, worker: worker)])
    }

    /// Another attempt: a note at `noteSeq` says why, the job waits for a worker again (keeping its
    /// place in the queue), and that worker numbers its events from `noteSeq + 1`, so the job's
    /// stream stays one sequence with every attempt in it.
    private func nextAttempt(_ job: inout Job, noteSeq: Int, reason: String, learntToolchain: String?, then owed: [Action]) -> Transition {
        guard var request = try? JSONDecoder().decode(BuildRequest.self, from: Data(job.request.utf8)) else {
            return .refused(.unreadableRequest)
        }
        let attempt = job.attempt
        request.attempt = attempt + 1
        request.firstSeq = noteSeq + 1
        guard let encoded = JSONText.encode(request) else { return .refused(.unreadableRequest) }
        if let learntToolchain, ["cargo", "nix"].contains(learntToolchain) {
            var options = job.requestOptions
            options.toolchain = learntToolchain
            job.options = JSONText.encode(options)
        }
        job.status = .waiting
        job.attempt = attempt + 1
        job.request = encoded
        job.workerID = nil
        job.workerIdentity = nil
        job.phase = nil
        job.lastSeenAt = nil
        job.artifactIDs = nil
        job.resultSha256 = nil
        job.resultSize = nil
        job.heldDone = nil
        var note = BuildEvent(jobID: job.id, seq: noteSeq, type: .log, time: now)
        note.stream = "stderr"
        note.lines = ["[kiln] attempt \(attempt) of \(job.maxAttempts) ended: \(reason); trying again (attempt \(attempt + 1))"]
        return .applied([.storeEvent(note), .clearResultChunks] + owed + [.wakeDispatcher])
    }

    private func end(_ job: inout Job, _ status: Job.Status, _ failure: JobFailure?) {
        assert(status.isTerminal, "end(_:) with a status that is not terminal")
        job.status = status
        job.finishedAt = now
        job.heldDone = nil
        failure?.record(on: &job)
    }
}

/// Compact JSON text for the job's JSON-valued columns. Encoding these value types cannot fail; nil
/// marks the impossible case rather than trapping in production.
enum JSONText {
    static func encode<T: Encodable>(_ value: T) -> String? {
        guard let data = try? JSONEncoder().encode(value) else {
            assertionFailure("cannot encode \(T.self) as JSON")
            return nil
        }
        return String(decoding: data, as: UTF8.self)
    }
}

extension [UInt8] {
    var stringValue: String { String(decoding: self, as: UTF8.self) }
}
