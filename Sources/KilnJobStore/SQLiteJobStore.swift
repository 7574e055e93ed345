import Foundation
import GRDB
import KilnCore
import KilnJobs

/// The embedded default store: SQLite in WAL mode (GRDB) under the data directory.
public final class SQLiteJobStore: JobStore {
    let pool: DatabasePool
    /// A connection of its own for WAL checkpoints, so copying the log into the database (and its
    /// fsync) never happens inside a request's commit: SQLite's automatic checkpoint would make
    /// every ~1000th page written pay for all of them.
    let checkpointer: DatabaseQueue

    public init(path: String) throws {
        var config = Configuration()
        config.busyMode = .timeout(10)
        config.prepareDatabase { db in
            try db.execute(sql: "PRAGMA synchronous = NORMAL")
            try db.execute(sql: "PRAGMA wal_autocheckpoint = 0")
        }
        pool = try DatabasePool(path: path, configuration: config)
        checkpointer = try DatabaseQueue(path: path, configuration: config)
        var migrator = DatabaseMigrator()
        migrator.registerMigration("v1") { db in
            try db.create(table: "job") { t in
                t.primaryKey("id", .text)
                t.column("status", .text).notNull().indexed()
                t.column("phase", .text)
                t.column("nonce", .text).notNull()
                t.column("request", .text).notNull()
                t.column("position", .integer).notNull().indexed()
                t.column("queuedAt", .datetime).notNull()
                t.column("startedAt", .datetime)
                t.column("finishedAt", .datetime)
                t.column("workerID", .text)
                t.column("failurePhase", .text)
                t.column("error", .text)
                t.column("retryable", .boolean)
                t.column("suggestedAction", .text)
                t.column("sourceDigest", .text)
                t.column("resultSha256", .text)
                t.column("resultSize", .integer)
                t.column("retentionExpiresAt", .datetime)
                t.column("lastSeenAt", .datetime)
                t.column("dispatchAttempts", .integer).notNull().defaults(to: 0)
            }
            try db.create(table: "event") { t in
                t.column("job_id", .text).notNull()
                t.column("seq", .integer).notNull()
                t.column("type", .text).notNull()
                t.column("data", .text).notNull()
                t.primaryKey(["job_id", "seq"])
            }
            try db.create(table: "chunk") { t in
                t.column("job_id", .text).notNull()
                t.column("idx", .integer).notNull()
                t.primaryKey(["job_id", "idx"])
            }
        }
        migrator.registerMigration("v2: queue index") { db in
            // The next job to dispatch is one index lookup, however long the queue or the history.
            try db.create(index: "job_status_position", on: "job", columns: ["status", "position"])
        }
        migrator.registerMigration("v3: worker identity") { db in
            try db.alter(table: "job") { t in t.add(column: "workerIdentity", .text) }
        }
        migrator.registerMigration("v4: principals") { db in
            try db.alter(table: "job") { t in t.add(column: "triggeredBy", .text) }
            try db.create(index: "job_triggered_position", on: "job", columns: ["triggeredBy", "position"])
        }
        migrator.registerMigration("v5: cache summary") { db in
            try db.alter(table: "job") { t in t.add(column: "cacheSummary", .text) }
        }
        migrator.registerMigration("v6: submission options") { db in
            try db.alter(table: "job") { t in t.add(column: "options", .text) }
        }
        migrator.registerMigration("v7: attempts") { db in
            try db.alter(table: "job") { t in
                t.add(column: "attempt", .integer).notNull().defaults(to: 1)
                t.add(column: "maxAttempts", .integer).notNull().defaults(to: 1)
            }
        }
        migrator.registerMigration("v8: retries") { db in
            try db.alter(table: "job") { t in
                t.add(column: "retryOf", .text)
                t.add(column: "originalBuild", .text)
            }
        }
        migrator.registerMigration("v9: the whole record") { db in
            try db.alter(table: "job") { t in
                t.add(column: "updatedAt", .datetime)
                t.add(column: "cancelRequestedAt", .datetime)
                t.add(column: "cancelledBy", .text)
                t.add(column: "cancellationReason", .text)
                t.add(column: "requestID", .text)
                t.add(column: "artifactIDs", .text)
            }
        }
        migrator.registerMigration("v10: source tree") { db in
            try db.alter(table: "job") { t in t.add(column: "sourceTree", .text) }
        }
        migrator.registerMigration("v11: rebuilds") { db in
            try db.alter(table: "job") { t in
                t.add(column: "rebuildOf", .text)
                t.add(column: "reproducible", .boolean)
                t.add(column: "differingArtifacts", .text)
            }
        }
        migrator.registerMigration("v12: dispatch claims") { db in
            try db.alter(table: "job") { t in
                t.add(column: "dispatchClaimedBy", .text)
                t.add(column: "dispatchClaimExpiresAt", .datetime)
            }
        }
        migrator.registerMigration("v13: ingesting gateways") { db in
            try db.alter(table: "job") { t in t.add(column: "ingestedBy", .text) }
            try db.create(table: "gateway") { t in
                t.primaryKey("id", .text)
                t.column("seenAt", .datetime).notNull()
            }
        }
        migrator.registerMigration("v14: held done events") { db in
            try db.alter(table: "job") { t in t.add(column: "heldDone", .text) }
        }
        try migrator.migrate(pool)
    }

    /// A blocking read on the calling thread, for short indexed lookups on latency-critical paths.
    private func readNow<T>(_ block: (Database) throws -> T) throws -> T { try pool.read(block) }

    /// A blocking write on the calling thread: one short transaction on the submit path, where the
    /// thread wake-ups of an async write cost more than the write.
    private func writeNow<T>(_ block: (Database) throws -> T) throws -> T { try pool.write(block) }

    public func list(_ filter: JobListFilter) async throws -> [Job] {
        try await pool.read { db in
            var request = Job.all()
            if let who = filter.triggeredBy { request = request.filter(Column("triggeredBy") == who) }
            if let status = filter.status { request = request.filter(Column("status") == status.rawValue) }
            if let since = filter.since { request = request.filter(Column("queuedAt") >= since) }
            if let before = filter.beforePosition { request = request.filter(Column("position") < before) }
            return try request.order(Column("position").desc).limit(filter.limit).fetchAll(db)
        }
    }

    public func enqueue(_ job: Job) async throws -> Job {
        try writeNow { db in
            var job = job
            job.position = try Int64.fetchOne(db, SQLRequest(sql: "SELECT COALESCE(MAX(position), 0) + 1 FROM job", cached: true)) ?? 1
            try job.insert(db)
            return job
        }
    }

    public func job(_ id: String) async throws -> Job? {
        try await pool.read { db in try Job.fetchOne(db, SQLRequest(sql: "SELECT * FROM job WHERE id = ?", arguments: [id], cached: true)) }
    }

    @discardableResult
    public func modify<Outcome: Sendable>(_ id: String, _ change: @escaping @Sendable (inout Job) -> Outcome) async throws -> (job: Job, outcome: Outcome)? {
        try await pool.write { db in
            guard var job = try Job.fetchOne(db, key: id) else { return nil }
            let before = job
            let outcome = change(&job)
            if job != before {
                job.updatedAt = Date()
                try job.update(db)
            }
            return (job, outcome)
        }
    }

    public func jobs(status: Job.Status) async throws -> [Job] {
        try await pool.read { db in try Job.filter(Column("status") == status.rawValue).order(Column("position")).fetchAll(db) }
    }

    public func oldestWaiting() async throws -> Job? {
        // Synchronous on purpose: one indexed row is far cheaper than the two thread wake-ups of an
        // async read, and this sits on the dispatch path whose latency the farm promises.
        try readNow { db in
            try Job.fetchOne(db, SQLRequest(sql: "SELECT * FROM job WHERE status = 'waiting' ORDER BY position LIMIT 1", cached: true))
        }
    }

    public func claimWaiting(by claimer: String, until: Date, skipping: Set<String>) async throws -> Job? {
        try await pool.write { db in
            let now = Date()
            let waiting = try Job.filter(Column("status") == Job.Status.waiting.rawValue).order(Column("position")).fetchAll(db)
            guard
                var job = waiting.first(where: {
                    !skipping.contains($0.id) && ($0.dispatchClaimedBy == nil || ($0.dispatchClaimExpiresAt ?? .distantPast) < now)
                })
            else { return nil }
            job.dispatchClaimedBy = claimer
            job.dispatchClaimExpiresAt = until
            job.updatedAt = now
            try job.update(db)
            return job
        }
    }

    public func releaseClaim(_ id: String, by claimer: String) async throws {
        try await pool.write { db in
            try db.execute(
                sql: "UPDATE job SET dispatchClaimedBy = NULL, dispatchClaimExpiresAt = NULL WHERE id = ? AND dispatchClaimedBy = ?",
                arguments: [id, claimer])
        }
    }

    public func countByStatus() async throws -> [Job.Status: Int] {
        try await pool.read { db in
            var out: [Job.Status: Int] = [:]
            for row in try Row.fetchAll(db, sql: "SELECT status, COUNT(*) AS n FROM job GROUP BY status") {
                if let s = Job.Status(rawValue: row["status"]) { out[s] = row["n"] }
            }
            return out
        }
    }

    public func appendEvent(_ event: StoredEvent) async throws -> Bool {
        try await pool.write { db in
            if try StoredEvent.filter(Column("job_id") == event.jobID && Column("seq") == event.seq).fetchCount(db) > 0 { return false }
            try event.insert(db)
            return true
        }
    }

    public func appendBuildingEvent(_ event: StoredEvent, phase: String?, seenAt: Date, gateway: String) async throws -> Bool {
        try await pool.write { db in
            // Cached statements: no SQL generation or parsing per event.
            let insert = try db.cachedStatement(
                sql: """
                    INSERT OR IGNORE INTO event (job_id, seq, type, data)
                    SELECT ?, ?, ?, ? WHERE EXISTS (SELECT 1 FROM job WHERE id = ? AND status = 'building' AND ingestedBy = ?)
                    """)
            try insert.execute(arguments: [event.jobID, event.seq, event.type, event.data, event.jobID, gateway])
            guard db.changesCount == 1 else { return false }
            let seen = try db.cachedStatement(sql: "UPDATE job SET lastSeenAt = ?, phase = COALESCE(?, phase) WHERE id = ?")
            try seen.execute(arguments: [seenAt, phase, event.jobID])
            return true
        }
    }

    public func events(job: String, after seq: Int) async throws -> [StoredEvent] {
        try await pool.read { db in
            try StoredEvent.filter(Column("job_id") == job && Column("seq") > seq).order(Column("seq")).fetchAll(db)
        }
    }

    public func lastSeq(job: String) async throws -> Int {
        try await pool.read { db in try Int.fetchOne(db, sql: "SELECT COALESCE(MAX(seq), 0) FROM event WHERE job_id = ?", arguments: [job]) ?? 0 }
    }

    public func recordChunk(job: String, index: Int) async throws {
        try await pool.write { db in try db.execute(sql: "INSERT OR IGNORE INTO chunk (job_id, idx) VALUES (?, ?)", arguments: [job, index]) }
    }

    public func chunks(job: String) async throws -> Set<Int> {
        try await pool.read { db in Set(try Int.fetchAll(db, sql: "SELECT idx FROM chunk WHERE job_id = ?", arguments: [job])) }
    }

    public func clearChunks(job: String) async throws {
        try await pool.write { db in try db.execute(sql: "DELETE FROM chunk WHERE job_id = ?", arguments: [job]) }
    }

    @discardableResult
    public func heartbeat(gateway: String, lease: Duration) async throws -> Int {
        try await pool.write { db in
            let now = Date()
            try db.execute(
                sql: "INSERT INTO gateway (id, seenAt) VALUES (?, ?) ON CONFLICT (id) DO UPDATE SET seenAt = excluded.seenAt",
                arguments: [gateway, now])
            return try Int.fetchOne(
                db, sql: "SELECT COUNT(*) FROM gateway WHERE id <> ? AND seenAt >= ?", arguments: [gateway, now.addingTimeInterval(-lease.seconds)]) ?? 0
        }
    }

    public func retire(gateway: String) async throws {
        try await pool.write { db in try db.execute(sql: "DELETE FROM gateway WHERE id = ?", arguments: [gateway]) }
    }

    public func adoptOrphans(by gateway: String, lease: Duration) async throws -> [Job] {
        try await pool.write { db in
            let live = Set(try String.fetchAll(db, sql: "SELECT id FROM gateway WHERE seenAt >= ?", arguments: [Date().addingTimeInterval(-lease.seconds)]))
            var adopted: [Job] = []
            for var job in try Job.filter(Column("status") == Job.Status.building.rawValue).fetchAll(db) {
                if let owner = job.ingestedBy, owner == gateway || live.contains(owner) { continue }
                job.ingestedBy = gateway
                job.updatedAt = Date()
                try job.update(db)
                adopted.append(job)
            }
            return adopted
        }
    }

    public func maintain() async throws {
        // PASSIVE: runs beside readers and the writer, never waits for them.
        try await checkpointer.writeWithoutTransaction { db in _ = try db.checkpoint(.passive) }
    }

    public func expiredResults(before: Date) async throws -> [Job] {
        try await pool.read { db in
            try Job.filter(Column("resultSha256") != nil && Column("retentionExpiresAt") < before).fetchAll(db)
        }
    }

    public func resultReferences(sha256: String) async throws -> Int {
        try await pool.read { db in try Job.filter(Column("resultSha256") == sha256).fetchCount(db) }
    }
}

// The records' SQLite mapping lives with the SQLite store: the job model itself knows no database.
extension Job: FetchableRecord, PersistableRecord {
    public static let databaseTableName = "job"
}

extension StoredEvent: FetchableRecord, PersistableRecord {
    public static let databaseTableName = "event"
}
