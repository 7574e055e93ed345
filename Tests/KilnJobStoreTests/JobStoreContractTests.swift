import Foundation
import KilnJobStore
import KilnJobs
import KilnTestSupport
import Logging
import Testing

/// #15 item 2: the job store's contract, run against SQLite and a real PostgreSQL alike.
@Suite(.serialized) struct JobStoreContractTests {
    static func job(_ id: String, by who: String = "alice") -> Job {
        var job = Job(id: id, nonce: "c0ffee00", request: "{}", position: 0, queuedAt: Date(), sourceDigest: nil)
        job.triggeredBy = who
        return job
    }

    /// What must survive a round trip (dates to the millisecond: SQLite keeps no more).
    static func essentials(_ j: Job) -> String {
        func ms(_ d: Date?) -> String { d.map { String(Int64(($0.timeIntervalSince1970 * 1000).rounded())) } ?? "-" }
        return [
            j.id, j.status.rawValue, String(j.position), j.nonce, j.request, j.triggeredBy ?? "-", j.workerID ?? "-", j.rebuildOf ?? "-", j.ingestedBy ?? "-",
            j.differingArtifacts ?? "-", String(j.dispatchAttempts), ms(j.queuedAt), ms(j.startedAt),
        ].joined(separator: "|")
    }

    func exercise(_ store: any JobStore) async throws {
        // FIFO positions, assigned by the store.
        var a = try await store.enqueue(Self.job("ja"))
        let b = try await store.enqueue(Self.job("jb", by: "bob"))
        #expect(b.position > a.position)
        #expect(try await store.oldestWaiting()?.id == "ja")
        // Dispatch claims: one gateway at a time per waiting job; released or expired, anyone's again.
        let later = Date(timeIntervalSinceNow: 60)
        #expect(try await store.claimWaiting(by: "g1", until: later, skipping: [])?.id == "ja")
        #expect(try await store.claimWaiting(by: "g2", until: later, skipping: [])?.id == "jb", "g1 holds ja")
        #expect(try await store.claimWaiting(by: "g3", until: later, skipping: []) == nil)
        #expect(try await store.claimWaiting(by: "g1", until: later, skipping: []) == nil, "ja is already g1's, jb is g2's")
        try await store.releaseClaim("ja", by: "g2")  // not g2's: no effect
        #expect(try await store.claimWaiting(by: "g3", until: later, skipping: []) == nil)
        try await store.releaseClaim("ja", by: "g1")
        try await store.update("jb") { $0.dispatchClaimExpiresAt = Date(timeIntervalSinceNow: -1) }
        #expect(try await store.claimWaiting(by: "g3", until: later, skipping: [])?.id == "ja")
        #expect(try await store.claimWaiting(by: "g4", until: later, skipping: [])?.id == "jb", "g2's claim expired")
        for (id, by) in [("ja", "g3"), ("jb", "g4")] { try await store.releaseClaim(id, by: by) }
        a = try #require(try await store.job("ja"))
        #expect(try await store.job("nope") == nil)

        // Concurrent read-modify-writes of one job never lose an update.
        try await withThrowingTaskGroup(of: Void.self) { group in
            for _ in 0..<40 { group.addTask { try await store.update("ja") { $0.dispatchAttempts += 1 } } }
            try await group.waitForAll()
        }
        #expect(try await store.job("ja")?.dispatchAttempts == 40)
        #expect(try await store.update("nope") { $0.status = .ready } == nil)

        // The record round-trips whole, new fields included.
        let building = try #require(
            try await store.update("ja") {
                $0.status = .building
                $0.workerID = "w1"
                $0.startedAt = Date(timeIntervalSince1970: 1_800_000_000.25)
                $0.rebuildOf = "jold"
                $0.differingArtifacts = "[\"artifacts/x\"]"
                $0.ingestedBy = "g1"
            })
        #expect(try await store.job("ja").map(Self.essentials) == Self.essentials(building))
        #expect(try await store.oldestWaiting()?.id == "jb")
        #expect(try await store.jobs(status: .building).map(\.id) == ["ja"])

        // Events: in sequence, no duplicates; the hot path only while building, noting the worker seen.
        #expect(try await store.appendEvent(StoredEvent(jobID: "jb", seq: 1, type: "accepted", data: "{}")))
        #expect(try await store.appendEvent(StoredEvent(jobID: "jb", seq: 1, type: "accepted", data: "{}")) == false)
        let seen = Date(timeIntervalSince1970: 1_800_000_100)
        #expect(
            try await store.appendBuildingEvent(
                StoredEvent(jobID: "ja", seq: 1, type: "phase", data: "{\"name\":\"build\"}"), phase: "build", seenAt: seen, gateway: "g1"))
        #expect(try await store.appendBuildingEvent(StoredEvent(jobID: "ja", seq: 1, type: "phase", data: "{}"), phase: nil, seenAt: seen, gateway: "g1") == false)
        #expect(
            try await store.appendBuildingEvent(StoredEvent(jobID: "jb", seq: 2, type: "log", data: "{}"), phase: nil, seenAt: seen, gateway: "g1") == false,
            "jb is not building")
        #expect(
            try await store.appendBuildingEvent(StoredEvent(jobID: "ja", seq: 2, type: "log", data: "{}"), phase: nil, seenAt: seen, gateway: "g2") == false,
            "g1 ingests ja, not g2")
        #expect(try await store.appendBuildingEvent(StoredEvent(jobID: "ja", seq: 2, type: "log", data: "{}"), phase: nil, seenAt: seen, gateway: "g1"))
        let afterEvents = try #require(try await store.job("ja"))
        #expect(afterEvents.phase == "build" && afterEvents.lastSeenAt.map { abs($0.timeIntervalSince(seen)) < 0.001 } == true, "\(afterEvents)")
        #expect(try await store.events(job: "ja", after: 0).map(\.seq) == [1, 2])
        #expect(try await store.events(job: "ja", after: 1).map(\.type) == ["log"])
        #expect(try await store.lastSeq(job: "ja") == 2)
        #expect(try await store.lastSeq(job: "none") == 0)

        // Ingesting gateways: a live one keeps its jobs; a silent or retired one's are adopted, once.
        #expect(try await store.heartbeat(gateway: "g1", lease: .seconds(30)) == 0)
        #expect(try await store.heartbeat(gateway: "g2", lease: .seconds(30)) == 1, "g1 is a live peer")
        #expect(try await store.adoptOrphans(by: "g2", lease: .seconds(30)).isEmpty, "g1 is alive")
        try await store.retire(gateway: "g1")
        #expect(try await store.adoptOrphans(by: "g2", lease: .seconds(30)).map(\.id) == ["ja"])
        #expect(try await store.job("ja")?.ingestedBy == "g2")
        #expect(try await store.adoptOrphans(by: "g3", lease: .seconds(30)).isEmpty, "g2 is alive and holds it")
        #expect(try await store.adoptOrphans(by: "g2", lease: .seconds(30)).isEmpty, "already g2's")
        try await Task.sleep(for: .milliseconds(1100))
        #expect(try await store.adoptOrphans(by: "g3", lease: .seconds(1)).map(\.id) == ["ja"], "g2's heartbeat is older than the lease")
        try await store.update("ja") { $0.ingestedBy = "g1" }

        // Chunks.
        for i in [0, 2, 2, 1] { try await store.recordChunk(job: "ja", index: i) }
        #expect(try await store.chunks(job: "ja") == [0, 1, 2])
        try await store.clearChunks(job: "ja")
        #expect(try await store.chunks(job: "ja").isEmpty)

        // Listing, counting, retention.
        var mine = JobListFilter()
        mine.triggeredBy = "alice"
        #expect(try await store.list(mine).map(\.id) == ["ja"])
        var page = JobListFilter()
        page.limit = 1
        let first = try await store.list(page)
        #expect(first.map(\.id) == ["jb"])
        page.beforePosition = first.last?.position
        #expect(try await store.list(page).map(\.id) == ["ja"])
        var waiting = JobListFilter()
        waiting.status = .waiting
        #expect(try await store.list(waiting).map(\.id) == ["jb"])
        #expect(try await store.countByStatus() == [.building: 1, .waiting: 1])
        let sha = String(repeating: "ab", count: 32)
        try await store.update("ja") {
            $0.status = .ready
            $0.resultSha256 = sha
            $0.retentionExpiresAt = Date(timeIntervalSinceNow: -1)
        }
        try await store.update("jb") {
            $0.resultSha256 = sha
            $0.retentionExpiresAt = Date(timeIntervalSinceNow: 3600)
        }
        #expect(try await store.expiredResults(before: Date()).map(\.id) == ["ja"])
        #expect(try await store.resultReferences(sha256: sha) == 2)
        try await store.maintain()
    }

    @Test func sqlite() async throws {
        let dir = try TemporaryDirectory(prefix: "kiln-store")
        try await exercise(try SQLiteJobStore(path: dir.file("kiln.sqlite")))
    }

    /// Two gateways claiming from one PostgreSQL at once: every waiting job is claimed exactly once.
    @Test func concurrentClaimsOnPostgresNeverOverlap() async throws {
        let server = try await PostgresProcess()
        defer { server.stop() }
        let one = try await PostgresJobStore.connect(url: server.url, logger: Logger(label: "test"))
        let two = try await PostgresJobStore.connect(url: server.url, logger: Logger(label: "test"))
        for i in 0..<120 { _ = try await one.enqueue(Self.job("j\(i)")) }
        let later = Date(timeIntervalSinceNow: 600)
        let claimed = try await withThrowingTaskGroup(of: [String].self) { group in
            for (store, name) in [(one, "g1"), (two, "g2"), (one, "g3"), (two, "g4")] as [(PostgresJobStore, String)] {
                group.addTask {
                    var mine: [String] = []
                    while let job = try await store.claimWaiting(by: name, until: later, skipping: []) {
                        mine.append(job.id)
                    }
                    return mine
                }
            }
            var all: [[String]] = []
            for try await ids in group { all.append(ids) }
            return all
        }
        let flat = claimed.flatMap { $0 }
        #expect(flat.count == 120 && Set(flat).count == 120, "claimed \(flat.count), distinct \(Set(flat).count)")
        #expect(claimed.filter { !$0.isEmpty }.count > 1, "the claimers shared the work: \(claimed.map(\.count))")

        // The same for adopting a dead gateway's building jobs: each exactly once.
        for i in 0..<120 {
            try await one.update("j\(i)") {
                $0.status = .building
                $0.ingestedBy = "dead"
            }
        }
        let adopted = try await withThrowingTaskGroup(of: [String].self) { group in
            for (store, name) in [(one, "g1"), (two, "g2"), (one, "g3"), (two, "g4")] as [(PostgresJobStore, String)] {
                group.addTask {
                    try await store.heartbeat(gateway: name, lease: .seconds(60))
                    return try await store.adoptOrphans(by: name, lease: .seconds(60)).map(\.id)
                }
            }
            var all: [String] = []
            for try await ids in group { all += ids }
            return all
        }
        #expect(adopted.count == 120 && Set(adopted).count == 120, "adopted \(adopted.count), distinct \(Set(adopted).count)")
    }

    @Test func postgres() async throws {
        let server = try await PostgresProcess()
        defer { server.stop() }
        let store = try await PostgresJobStore.connect(url: server.url, logger: Logger(label: "test"))
        try await exercise(store)
        // A second gateway starting against the same database finds it migrated and sees the jobs.
        let second = try await PostgresJobStore.connect(url: server.url, logger: Logger(label: "test"))
        #expect(try await second.job("ja")?.status == .ready)
    }
}
