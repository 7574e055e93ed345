import KilnFetch
import KilnMessages
import Testing

/// The fetch service's per-worker accounts, without a bus: every quota, the plan rule and the
/// account bound, with the clock passed in.
struct FetchLedgerTests {
    static let t0 = ContinuousClock.now
    static func crate(_ n: Int) -> LockedCrate {
        LockedCrate(name: "c\(n)", version: "1.0.\(n)", sha256: String(repeating: String(n % 10), count: 64))
    }

    func small() -> FetchLedger {
        var quota = FetchLedger.Quota()
        quota.maxCrates = 3
        quota.maxBytes = 1000
        quota.maxGitFetches = 1
        quota.maxIndexFiles = 2
        quota.window = .seconds(60)
        quota.maxAccounts = 2
        return FetchLedger(quota: quota)
    }

    func reason(_ body: () throws(FetchRefusal) -> Void) -> FetchRefusal.Reason? {
        do {
            try body()
            return nil
        } catch { return error.reason }
    }

    @Test func aWorkerIsServedOnlyWhatItsFiledPlanNames() {
        var l = small()
        let (a, b) = (Self.crate(1), Self.crate(2))
        #expect(reason { () throws(FetchRefusal) in try l.permitCrate(a, job: "j1", worker: "w1", now: Self.t0) } == .forbidden, "before any plan")
        #expect(reason { () throws(FetchRefusal) in try l.file(FetchPlan(jobID: "j1", crates: [a]), worker: "w1", now: Self.t0) } == nil)
        #expect(reason { () throws(FetchRefusal) in try l.permitCrate(a, job: "j1", worker: "w1", now: Self.t0) } == nil)
        #expect(reason { () throws(FetchRefusal) in try l.permitCrate(b, job: "j1", worker: "w1", now: Self.t0) } == .forbidden, "not in the lock")
        #expect(reason { () throws(FetchRefusal) in try l.file(FetchPlan(jobID: "j1", crates: [a, b]), worker: "w1", now: Self.t0) } == .forbidden, "a second plan")
        #expect(reason { () throws(FetchRefusal) in try l.permitCrate(a, job: "j2", worker: "w1", now: Self.t0) } == .forbidden, "another job")
        // Another worker's plan is its own.
        #expect(reason { () throws(FetchRefusal) in try l.permitCrate(a, job: "j1", worker: "w2", now: Self.t0) } == .forbidden)
    }

    @Test(arguments: [
        // (what, expected reason)
        ("too many crates", FetchRefusal.Reason.quota),
        ("a bad name", .badRequest),
        ("a bad digest", .badRequest),
    ])
    func plansOutsideTheRulesAreRefused(what: String, expected: FetchRefusal.Reason) {
        var l = small()
        let crates: [LockedCrate]
        switch what {
        case "too many crates": crates = (1...4).map(Self.crate)
        case "a bad name": crates = [LockedCrate(name: "../etc", version: "1.0.0", sha256: String(repeating: "a", count: 64))]
        default: crates = [LockedCrate(name: "ok", version: "1.0.0", sha256: "ABC")]
        }
        #expect(reason { () throws(FetchRefusal) in try l.file(FetchPlan(jobID: "j", crates: crates), worker: "w", now: Self.t0) } == expected)
    }

    @Test func bytesGitFetchesAndIndexFilesStopAtTheirQuotas() {
        var l = small()
        #expect(reason { () throws(FetchRefusal) in try l.charge(600, newObject: true, job: "j", worker: "w", now: Self.t0) } == nil)
        #expect(reason { () throws(FetchRefusal) in try l.charge(400, newObject: false, job: "j", worker: "w", now: Self.t0) } == nil)
        #expect(reason { () throws(FetchRefusal) in try l.charge(1, newObject: false, job: "j", worker: "w", now: Self.t0) } == .quota)
        #expect(l.accounts["w"]?.bytesServed == 1000 && l.accounts["w"]?.objectsServed == 1)
        #expect(reason { () throws(FetchRefusal) in try l.permitGitFetch(job: "j", worker: "w", now: Self.t0) } == nil)
        #expect(reason { () throws(FetchRefusal) in try l.permitGitFetch(job: "j", worker: "w", now: Self.t0) } == .quota)
        #expect(reason { () throws(FetchRefusal) in try l.permitIndexFile(job: "j", worker: "w", now: Self.t0) } == nil)
        #expect(reason { () throws(FetchRefusal) in try l.permitIndexFile(job: "j", worker: "w", now: Self.t0) } == nil)
        #expect(reason { () throws(FetchRefusal) in try l.permitIndexFile(job: "j", worker: "w", now: Self.t0) } == .quota)
    }

    @Test func theWindowClosesAnAccountAndExpiryFreesItsPlace() {
        var l = small()
        #expect(reason { () throws(FetchRefusal) in try l.permitIndexFile(job: "j", worker: "w1", now: Self.t0) } == nil)
        #expect(reason { () throws(FetchRefusal) in try l.permitIndexFile(job: "j", worker: "w2", now: Self.t0 + .seconds(30)) } == nil)
        // Two accounts open (the bound): a third worker waits until one has expired.
        #expect(reason { () throws(FetchRefusal) in try l.permitIndexFile(job: "j", worker: "w3", now: Self.t0 + .seconds(31)) } == .quota)
        #expect(reason { () throws(FetchRefusal) in try l.permitIndexFile(job: "j", worker: "w1", now: Self.t0 + .seconds(61)) } == .quota, "w1's window is over")
        #expect(reason { () throws(FetchRefusal) in try l.permitIndexFile(job: "j", worker: "w3", now: Self.t0 + .seconds(62)) } == nil, "w1's expired place is taken")
        #expect(l.accounts["w1"] == nil)
        #expect(l.expire(now: Self.t0 + .seconds(200)) == 2)
        #expect(l.accounts.isEmpty)
    }

    @Test func fetchSubjectsNameTheirWorkerAndKind() {
        #expect(Subjects.parseFetch(Subjects.fetch("w-1", .crate))! == ("w-1", .crate))
        for bad in ["kiln.worker.w1.fetch", "kiln.worker.w1.fetch.nope", "kiln.worker.*.fetch.git", "kiln.worker.w1.certify", "x.worker.w1.fetch.git"] {
            #expect(Subjects.parseFetch(bad) == nil, "\(bad)")
        }
    }
}
