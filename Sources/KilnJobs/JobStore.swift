import Foundation

/// Where the gateway keeps jobs, events and result bookkeeping. A protocol so that PostgreSQL can
/// replace SQLite when the farm grows past one machine (design §8). The stores live in `KilnJobStore`;
/// nothing else depends on SQLite or PostgreSQL.
public protocol JobStore: Sendable {
    /// Stores a new job at the back of the queue (its `position` is assigned here, in the same
    /// transaction) and returns it as stored.
    func enqueue(_ job: Job) async throws -> Job
    func job(_ id: String) async throws -> Job?
    /// Reads, changes and writes one job atomically (writing nothing when `change` leaves it as it
    /// was); returns the new value and what `change` returned (nil if the job is unknown). The job
    /// lifecycle's transitions run in here (`JobLifecycle`), so each acts on the job as stored.
    func modify<Outcome: Sendable>(_ id: String, _ change: @escaping @Sendable (inout Job) -> Outcome) async throws -> (job: Job, outcome: Outcome)?
    func jobs(status: Job.Status) async throws -> [Job]
    /// A page of jobs, newest first (`GET /builds`).
    func list(_ filter: JobListFilter) async throws -> [Job]
    /// The next job to dispatch (FIFO), without reading the whole queue.
    func oldestWaiting() async throws -> Job?
    /// The oldest waiting job (not in `skipping`) that no gateway holds an unexpired dispatch claim on
    /// (this one included: it skips what it is offering already), claimed by `claimer` until `until`, atomically: with several gateways on one store,
    /// each waiting job is offered to workers by exactly one gateway at a time (PostgreSQL: `FOR
    /// UPDATE SKIP LOCKED`). A gateway that dies mid-offer loses its claim when it expires.
    func claimWaiting(by claimer: String, until: Date, skipping: Set<String>) async throws -> Job?
    /// Gives a claim up (nobody took the job): any gateway may offer it again at once.
    func releaseClaim(_ id: String, by claimer: String) async throws
    func countByStatus() async throws -> [Job.Status: Int]
    /// Stores an event if it is the next in sequence; returns false for duplicates.
    func appendEvent(_ event: StoredEvent) async throws -> Bool
    /// The hot path of a running build: stores a non-terminal event of a `building` job that `gateway`
    /// ingests and notes the worker as seen (and the phase, if given), in one transaction. False for a
    /// duplicate, a job no longer building, or one another gateway has taken over.
    func appendBuildingEvent(_ event: StoredEvent, phase: String?, seenAt: Date, gateway: String) async throws -> Bool
    func events(job: String, after seq: Int) async throws -> [StoredEvent]
    func lastSeq(job: String) async throws -> Int
    func recordChunk(job: String, index: Int) async throws
    func chunks(job: String) async throws -> Set<Int>
    func clearChunks(job: String) async throws
    func expiredResults(before: Date) async throws -> [Job]
    /// How many jobs still hold the result file `sha256` (results are content-addressed: identical
    /// builds share one file).
    func resultReferences(sha256: String) async throws -> Int
    /// `gateway` is alive now (every second, from its housekeeping); returns how many other
    /// gateways have sent a heartbeat within `lease`.
    @discardableResult
    func heartbeat(gateway: String, lease: Duration) async throws -> Int
    /// `gateway` is stopping: its jobs may be taken over at once instead of after its lease.
    func retire(gateway: String) async throws
    /// Building jobs whose ingesting gateway has not sent a heartbeat within `lease` (or that none
    /// ingests), now ingested by `gateway`, atomically: two gateways adopting at once take disjoint
    /// sets. The store's clock judges the lease, so gateways' clocks need not agree.
    func adoptOrphans(by gateway: String, lease: Duration) async throws -> [Job]
    /// Periodic housekeeping off the request path (SQLite: WAL checkpoints); called every second.
    func maintain() async throws
}

extension JobStore {
    /// Reads, changes and writes one job atomically; returns the new value (nil if unknown).
    @discardableResult
    public func update(_ id: String, _ change: @escaping @Sendable (inout Job) -> Void) async throws -> Job? {
        try await modify(id, change)?.job
    }
}

/// What `GET /builds` asks the store for.
public struct JobListFilter: Sendable {
    public var triggeredBy: String?
    public var status: Job.Status?
    public var since: Date?
    /// Only jobs submitted before this one (`position`), for the next page.
    public var beforePosition: Int64?
    public var limit = 50

    public init() {}
}
