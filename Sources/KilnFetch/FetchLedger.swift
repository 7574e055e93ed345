import KilnMessages

/// What each worker has asked the fetch service for, and what it may still ask: a pure state machine
/// (inputs in, decisions out, the clock passed in), so every quota is tested without a bus.
///
/// A worker is one build: its first request opens its account, which lasts `window`. The account
/// holds the job the worker fetches for (one job per worker: a second job id is refused), the plan of
/// crates its lock pins (filed once; crates outside it are refused), and what it has been served
/// (objects, bytes, git packs, index files), each against its own limit. At most `maxAccounts` are
/// kept; the oldest expired ones go first, and when none has expired a new worker is refused (a flood
/// of worker ids cannot grow the service's memory).
public struct FetchLedger: Sendable {
    public struct Quota: Sendable, Equatable {
        /// Crates one job's plan may name.
        public var maxCrates = 4000
        /// Bytes served to one job, all kinds together.
        public var maxBytes: Int64 = 4 << 30
        /// Git packs one job may ask for (its source; a retry).
        public var maxGitFetches = 4
        /// Registry index files one job may read (resolving a lock-less project).
        public var maxIndexFiles = 4000
        /// How long a worker's account stays open after its first request.
        public var window: Duration = .seconds(60 * 60)
        /// Accounts kept at once.
        public var maxAccounts = 4096

        public init() {}
    }

    public struct Account: Sendable, Equatable {
        public var jobID: String
        public var opened: ContinuousClock.Instant
        public var plan: Set<String>?
        public var bytesServed: Int64 = 0
        public var objectsServed = 0
        public var gitFetches = 0
        public var indexFiles = 0
    }

    public let quota: Quota
    public private(set) var accounts: [String: Account] = [:]

    public init(quota: Quota = Quota()) { self.quota = quota }

    /// The account `worker` draws on for `job`, opened now if it has none.
    private mutating func account(_ worker: String, job: String, now: ContinuousClock.Instant) throws(FetchRefusal) -> Account {
        if let existing = accounts[worker] {
            guard existing.jobID == job else { throw FetchRefusal(.forbidden, "worker \(worker) fetches for job \(existing.jobID), not \(job)") }
            guard now - existing.opened <= quota.window else {
                throw FetchRefusal(.quota, "job \(job)'s fetch window of \(quota.window) is over")
            }
            return existing
        }
        if accounts.count >= quota.maxAccounts {
            let expired = accounts.filter { now - $0.value.opened > quota.window }.sorted { $0.value.opened < $1.value.opened }
            guard let oldest = expired.first else {
                throw FetchRefusal(.quota, "the fetch service is serving \(quota.maxAccounts) workers; retry later", retryable: true)
            }
            accounts[oldest.key] = nil
        }
        let fresh = Account(jobID: job, opened: now)
        accounts[worker] = fresh
        return fresh
    }

    /// Files the crates of `job`'s lock; once per worker.
    public mutating func file(_ plan: FetchPlan, worker: String, now: ContinuousClock.Instant) throws(FetchRefusal) {
        var account = try account(worker, job: plan.jobID, now: now)
        guard account.plan == nil else { throw FetchRefusal(.forbidden, "job \(plan.jobID) has filed its plan already") }
        guard plan.crates.count <= quota.maxCrates else {
            throw FetchRefusal(.quota, "the lock names \(plan.crates.count) crates; this farm fetches at most \(quota.maxCrates) for one job")
        }
        if let bad = plan.crates.first(where: { !FetchNames.isValid($0) }) {
            throw FetchRefusal(.badRequest, "the plan names a crate Kiln refuses: '\(bad.name)' '\(bad.version)'")
        }
        account.plan = Set(plan.crates.map(\.sha256))
        accounts[worker] = account
    }

    /// May `worker` be served `crate` for `job`? Only a crate its filed plan names.
    public mutating func permitCrate(_ crate: LockedCrate, job: String, worker: String, now: ContinuousClock.Instant) throws(FetchRefusal) {
        guard FetchNames.isValid(crate) else { throw FetchRefusal(.badRequest, "'\(crate.name)' '\(crate.version)' is not a crate Kiln fetches") }
        let account = try account(worker, job: job, now: now)
        guard let plan = account.plan else { throw FetchRefusal(.forbidden, "job \(job) asked for a crate before filing its plan") }
        guard plan.contains(crate.sha256) else {
            throw FetchRefusal(.forbidden, "\(crate.name) \(crate.version) is not in job \(job)'s Cargo.lock")
        }
    }

    /// May `worker` start one more git fetch (a new pack) for `job`?
    public mutating func permitGitFetch(job: String, worker: String, now: ContinuousClock.Instant) throws(FetchRefusal) {
        var account = try account(worker, job: job, now: now)
        guard account.gitFetches < quota.maxGitFetches else {
            throw FetchRefusal(.quota, "job \(job) has made \(quota.maxGitFetches) git fetches, the most one job may")
        }
        account.gitFetches += 1
        accounts[worker] = account
    }

    /// May `worker` read one more registry index file for `job`?
    public mutating func permitIndexFile(job: String, worker: String, now: ContinuousClock.Instant) throws(FetchRefusal) {
        var account = try account(worker, job: job, now: now)
        guard account.indexFiles < quota.maxIndexFiles else {
            throw FetchRefusal(.quota, "job \(job) has read \(quota.maxIndexFiles) index files, the most one job may")
        }
        account.indexFiles += 1
        accounts[worker] = account
    }

    /// Charges `bytes` about to be served (refused past the byte quota; nothing is charged then).
    /// `newObject`: the first chunk of an object.
    public mutating func charge(_ bytes: Int, newObject: Bool, job: String, worker: String, now: ContinuousClock.Instant) throws(FetchRefusal) {
        var account = try account(worker, job: job, now: now)
        guard account.bytesServed + Int64(bytes) <= quota.maxBytes else {
            throw FetchRefusal(.quota, "job \(job) has been served \(account.bytesServed) bytes; one job may fetch at most \(quota.maxBytes)")
        }
        account.bytesServed += Int64(bytes)
        if newObject { account.objectsServed += 1 }
        accounts[worker] = account
    }

    /// Drops the accounts whose window is over (housekeeping); returns how many.
    @discardableResult
    public mutating func expire(now: ContinuousClock.Instant) -> Int {
        let before = accounts.count
        accounts = accounts.filter { now - $0.value.opened <= quota.window }
        return before - accounts.count
    }
}
