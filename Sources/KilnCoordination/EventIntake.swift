import KilnJobs
import KilnMessages

/// The coordinator's event intake as a pure part (#30): what a worker's event means before anything
/// is stored, decided from the job as stored and the event, in the way of `JobLifecycle` — no store,
/// no bus, no clock of its own. `BuildCoordinator` performs the decisions.
///
/// Two paths. The **hot path** takes the events of a running build that change nothing but its phase
/// and last-seen time (logs, heartbeats, phases, artifacts) when they come from the job's worker, in
/// sequence: one store insert, no read. Everything else takes the **full path**, checked against the
/// stored job: whose worker it is, duplicates (a terminal one is acknowledged again: the worker may
/// have missed the ack), gaps (answered with one replay request a second per job), and then the
/// lifecycle.
///
/// Both tables it keeps are bounded: `running` by the building jobs this gateway ingests (an entry
/// leaves when its job leaves `building`), `lastReplay` by `maxTracked` (cleared when full; the cost
/// is at most one extra replay request per job).
struct EventIntake {
    struct RunningJob: Equatable {
        let worker: String
        /// The broker-authenticated sender bound to the job, if any.
        let identity: String?
        var lastSeq: Int
    }

    /// What the full path does with an event.
    enum Decision: Equatable {
        /// Nothing: a duplicate of a non-terminal event, an event of an ended job, or one the job's
        /// state makes meaningless.
        case ignore
        /// An event from a worker that is not the job's: tell that worker to stop building it.
        case stopWorker(String)
        /// A duplicate terminal event of an ended job: acknowledge it again so the worker may exit.
        case acknowledge(seq: Int, worker: String)
        /// The terminal event the job ended with, not stored (the job's status is written first, the
        /// event after, and that store failed; the worker was not acknowledged and sent it again):
        /// store it now, then acknowledge.
        case storeAndAcknowledge(seq: Int, worker: String)
        /// A gap: ask the worker to send its events again from `fromSeq`.
        case requestReplay(fromSeq: Int, worker: String)
        /// A gap already asked about within the replay interval: wait for the replay.
        case awaitReplay
        /// The next event in sequence from the job's worker: the lifecycle's input (`workerDone`
        /// when `done`, which needs the attempt's artifacts).
        case apply(done: Bool)
    }

    /// How often one job's gap is answered with a replay request.
    let replayInterval: Duration
    /// Most jobs whose last replay request is remembered.
    let maxTracked: Int
    private(set) var running: [String: RunningJob] = [:]
    private(set) var lastReplay: [String: ContinuousClock.Instant] = [:]

    init(replayInterval: Duration = .seconds(1), maxTracked: Int = 10_000) {
        precondition(maxTracked > 0, "EventIntake must remember at least one job")
        self.replayInterval = replayInterval
        self.maxTracked = maxTracked
    }

    /// Events that change nothing on the job but its phase and last-seen time; the rest (acceptance,
    /// terminal events) go through `JobLifecycle`.
    static func takesTheHotPath(_ kind: BuildEvent.Kind) -> Bool {
        switch kind {
        case .log, .heartbeat, .phase, .artifact: true
        case .accepted, .done, .failed, .cancelled: false
        }
    }

    /// Whether this event may skip the stored job: its job's events are flowing, it comes from the
    /// job's worker (`fromJobsIdentity`: `SenderCheck.matches` against the bound identity), it is
    /// the next in sequence and of a hot-path kind.
    func isHotPath(_ event: BuildEvent, fromJobsIdentity: (String?) -> Bool) -> Bool {
        guard let known = running[event.jobID] else { return false }
        return known.worker == event.workerID && known.lastSeq + 1 == event.seq && Self.takesTheHotPath(event.type)
            && fromJobsIdentity(known.identity)
    }

    /// Whether the job's events are flowing through this gateway.
    func isRunning(_ jobID: String) -> Bool { running[jobID] != nil }

    /// The hot path's insert stored the event.
    mutating func storedOnTheHotPath(_ event: BuildEvent) {
        running[event.jobID]?.lastSeq = event.seq
    }

    /// The job is no longer known to be flowing here (the hot path's insert found it changed, its
    /// worker fell silent, another gateway took it): its next event takes the full path.
    mutating func forget(_ jobID: String) {
        running[jobID] = nil
    }

    /// The full path's decision for `event`, against `job` as stored and its last stored seq.
    mutating func decide(_ event: BuildEvent, job: Job, lastStoredSeq last: Int, now: ContinuousClock.Instant) -> Decision {
        guard let worker = event.workerID, worker == job.workerID else {
            // Another worker (a late acceptance, a stale one): it must stop — unless the job is
            // waiting, where a stale event means nothing and the next offer settles who builds it.
            if let other = event.workerID, job.status != .waiting { return .stopWorker(other) }
            return .ignore
        }
        if event.seq <= last {
            return event.type.isTerminal && job.status.isTerminal ? .acknowledge(seq: event.seq, worker: worker) : .ignore
        }
        if event.seq > last + 1 {
            if let asked = lastReplay[job.id], now - asked <= replayInterval { return .awaitReplay }
            if lastReplay[job.id] == nil, lastReplay.count >= maxTracked { lastReplay.removeAll(keepingCapacity: true) }
            lastReplay[job.id] = now
            return .requestReplay(fromSeq: last + 1, worker: worker)
        }
        guard !job.status.isTerminal else {
            return event.type == Self.terminalEvent(of: job.status) ? .storeAndAcknowledge(seq: event.seq, worker: worker) : .ignore
        }
        return .apply(done: event.type == .done)
    }

    /// The worker event a job ends with in `status` (nil: not a terminal status).
    static func terminalEvent(of status: Job.Status) -> BuildEvent.Kind? {
        switch status {
        case .ready: .done
        case .error: .failed
        case .cancelled: .cancelled
        case .waiting, .building: nil
        }
    }

    /// What the lifecycle made of an applied event: a job still building with a non-terminal event
    /// flows on the hot path from here; any other outcome leaves both tables.
    mutating func settled(_ event: BuildEvent, job: Job, refused: Bool) {
        if !refused, job.status == .building, !event.type.isTerminal, let worker = event.workerID {
            running[job.id] = RunningJob(worker: worker, identity: job.workerIdentity, lastSeq: event.seq)
        } else {
            running[job.id] = nil
        }
        if job.status.isTerminal { lastReplay[job.id] = nil }
    }
}
