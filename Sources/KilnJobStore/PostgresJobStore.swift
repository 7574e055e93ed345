import Foundation
import KilnCore
import KilnJobs
import Logging
import PostgresNIO
import ServiceLifecycle

/// The job store on PostgreSQL (#15 item 2), selected with `--database postgres://…`, for farms whose
/// gateways outgrow one machine's SQLite file.
///
/// Each job is one row: the columns the queries filter and order on (status, FIFO position, who
/// submitted it, result bookkeeping) and the whole `Job` as JSONB, so adding a field to `Job` needs no
/// migration here. Events and result chunks are rows of their own. Every read-modify-write of a job
/// runs in a transaction holding the row (`SELECT … FOR UPDATE`), so two gateways never interleave
/// changes to one job. Migrations are numbered and recorded in `kiln_migration`; concurrent gateways
/// starting at once serialise on an advisory lock.
///
/// Connections come from a `PostgresPool`, which bounds every operation (`operationTimeout`) and
/// replaces a pool that stopped answering; `run()` (the store is a `Service` in the gateway's group)
/// keeps it until shutdown.
public final class PostgresJobStore: JobStore, Service {
    let pool: PostgresPool
    let logger: Logger
    private static let encoder = JSONEncoder()
    private static let decoder = JSONDecoder()

    /// Connects (`postgres://user[:password]@host[:port]/database`, or `?host=/socket/dir`) and
    /// migrates. No operation waits longer than `operationTimeout` for the database.
    public static func connect(url: String, operationTimeout: Duration = .seconds(10), logger: Logger) async throws -> PostgresJobStore {
        let pool = PostgresPool(configuration: try configuration(url: url), operationTimeout: operationTimeout, logger: logger)
        let store = PostgresJobStore(pool: pool, logger: logger)
        do { try await store.migrate() } catch {
            pool.shutdown()
            throw error
        }
        return store
    }

    private init(pool: PostgresPool, logger: Logger) {
        self.pool = pool
        self.logger = logger
    }

    public func run() async throws {
        // Until the gateway shuts down; then the pool's connections close.
        try? await gracefulShutdown()
        pool.shutdown()
    }

    static func configuration(url: String) throws -> PostgresClient.Configuration {
        guard let c = URLComponents(string: url), ["postgres", "postgresql"].contains(c.scheme ?? ""), let user = c.user else {
            throw JobStoreError("--database must be postgres://user[:password]@host[:port]/database")
        }
        let database = c.path.hasPrefix("/") ? String(c.path.dropFirst()) : c.path
        if let socketDirectory = c.queryItems?.first(where: { $0.name == "host" })?.value {
            return .init(unixSocketPath: "\(socketDirectory)/.s.PGSQL.\(c.port ?? 5432)", username: user, password: c.password, database: database)
        }
        guard let host = c.host, !host.isEmpty else { throw JobStoreError("--database names no host") }
        return .init(host: host, port: c.port ?? 5432, username: user, password: c.password, database: database, tls: .disable)
    }

    // MARK: - migrations

    static let migrations: [(Int, [String])] = [
        (
            1,
            [
                """
                CREATE TABLE job (
                    id text PRIMARY KEY,
                    position bigint NOT NULL UNIQUE,
                    status text NOT NULL,
                    triggered_by text,
                    queued_at timestamptz NOT NULL,
                    result_sha256 text,
                    retention_expires_at timestamptz,
                    doc jsonb NOT NULL)
                """,
                "CREATE SEQUENCE job_position",
                "CREATE INDEX job_waiting ON job (position) WHERE status = 'waiting'",
                "CREATE INDEX job_status ON job (status)",
                "CREATE INDEX job_result ON job (result_sha256) WHERE result_sha256 IS NOT NULL",
                "CREATE TABLE event (job_id text NOT NULL, seq integer NOT NULL, type text NOT NULL, data text NOT NULL, PRIMARY KEY (job_id, seq))",
                "CREATE TABLE chunk (job_id text NOT NULL, idx integer NOT NULL, PRIMARY KEY (job_id, idx))",
            ]
        ),
        (
            2,
            [
                "ALTER TABLE job ADD COLUMN claimed_by text",
                "ALTER TABLE job ADD COLUMN claim_expires_at timestamptz",
            ]
        ),
        (
            3,
            [
                "ALTER TABLE job ADD COLUMN ingested_by text",
                "CREATE TABLE gateway (id text PRIMARY KEY, seen_at timestamptz NOT NULL)",
            ]
        ),
    ]

    func migrate() async throws {
        try await pool.withTransaction(timeout: .seconds(120)) { [self] connection in
            // One gateway migrates at a time; the others then find the work done.
            try await connection.query("SELECT pg_advisory_xact_lock(7104515)", logger: logger)
            try await connection.query("CREATE TABLE IF NOT EXISTS kiln_migration (version integer PRIMARY KEY, applied_at timestamptz NOT NULL)", logger: logger)
            var applied: Set<Int> = []
            for try await version in try await connection.query("SELECT version FROM kiln_migration", logger: logger).decode(Int.self) {
                applied.insert(version)
            }
            for (version, statements) in Self.migrations where !applied.contains(version) {
                for sql in statements { try await connection.query(PostgresQuery(unsafeSQL: sql), logger: logger) }
                try await connection.query("INSERT INTO kiln_migration (version, applied_at) VALUES (\(version), \(Date()))", logger: logger)
            }
        }
    }

    // MARK: - jobs

    static func encode(_ job: Job) throws -> String { String(decoding: try encoder.encode(job), as: UTF8.self) }
    static func decode(_ text: String) throws -> Job { try decoder.decode(Job.self, from: Data(text.utf8)) }

    func jobs(_ query: PostgresQuery, on connection: PostgresConnection? = nil) async throws -> [Job] {
        guard let connection else { return try await pool.withConnection { [self] in try await jobs(query, on: $0) } }
        let rows = try await connection.query(query, logger: logger)
        var out: [Job] = []
        for try await text in rows.decode(String.self) { out.append(try Self.decode(text)) }
        return out
    }

    public func enqueue(_ job: Job) async throws -> Job {
        try await pool.withTransaction { [self] connection in
            var job = job
            for try await position in try await connection.query("SELECT nextval('job_position')", logger: logger).decode(Int64.self) {
                job.position = position
            }
            try await write(job, insert: true, on: connection)
            return job
        }
    }

    private func write(_ job: Job, insert: Bool, on connection: PostgresConnection) async throws {
        let doc = try Self.encode(job)
        if insert {
            try await connection.query(
                """
                INSERT INTO job (id, position, status, triggered_by, queued_at, result_sha256, retention_expires_at, ingested_by, doc)
                VALUES (\(job.id), \(job.position), \(job.status.rawValue), \(job.triggeredBy), \(job.queuedAt), \(job.resultSha256),
                        \(job.retentionExpiresAt), \(job.ingestedBy), \(doc)::jsonb)
                """, logger: logger)
        } else {
            try await connection.query(
                """
                UPDATE job SET status = \(job.status.rawValue), triggered_by = \(job.triggeredBy), result_sha256 = \(job.resultSha256),
                    retention_expires_at = \(job.retentionExpiresAt), claimed_by = \(job.dispatchClaimedBy),
                    claim_expires_at = \(job.dispatchClaimExpiresAt), ingested_by = \(job.ingestedBy), doc = \(doc)::jsonb
                WHERE id = \(job.id)
                """, logger: logger)
        }
    }

    public func job(_ id: String) async throws -> Job? {
        try await jobs("SELECT doc::text FROM job WHERE id = \(id)").first
    }

    @discardableResult
    public func modify<Outcome: Sendable>(_ id: String, _ change: @escaping @Sendable (inout Job) -> Outcome) async throws -> (job: Job, outcome: Outcome)? {
        try await pool.withTransaction { [self] connection in
            guard var job = try await jobs("SELECT doc::text FROM job WHERE id = \(id) FOR UPDATE", on: connection).first else { return nil }
            let before = job
            let outcome = change(&job)
            if job != before {
                job.updatedAt = Date()
                try await write(job, insert: false, on: connection)
            }
            return (job, outcome)
        }
    }

    public func jobs(status: Job.Status) async throws -> [Job] {
        try await jobs("SELECT doc::text FROM job WHERE status = \(status.rawValue) ORDER BY position")
    }

    public func list(_ filter: JobListFilter) async throws -> [Job] {
        var sql = "SELECT doc::text FROM job WHERE true"
        var binds = PostgresBindings()
        if let who = filter.triggeredBy {
            binds.append(who)
            sql += " AND triggered_by = $\(binds.count)"
        }
        if let status = filter.status {
            binds.append(status.rawValue)
            sql += " AND status = $\(binds.count)"
        }
        if let since = filter.since {
            binds.append(since)
            sql += " AND queued_at >= $\(binds.count)"
        }
        if let before = filter.beforePosition {
            binds.append(before)
            sql += " AND position < $\(binds.count)"
        }
        binds.append(filter.limit)
        sql += " ORDER BY position DESC LIMIT $\(binds.count)"
        return try await jobs(PostgresQuery(unsafeSQL: sql, binds: binds))
    }

    public func oldestWaiting() async throws -> Job? {
        try await jobs("SELECT doc::text FROM job WHERE status = 'waiting' ORDER BY position LIMIT 1").first
    }

    public func claimWaiting(by claimer: String, until: Date, skipping: Set<String>) async throws -> Job? {
        try await pool.withTransaction { [self] connection in
            // Rows another gateway is claiming right now are skipped, not waited for.
            guard
                var job = try await jobs(
                    """
                    SELECT doc::text FROM job
                    WHERE status = 'waiting' AND NOT (id = ANY(\(Array(skipping))))
                      AND (claimed_by IS NULL OR claim_expires_at < now())
                    ORDER BY position LIMIT 1 FOR UPDATE SKIP LOCKED
                    """, on: connection
                ).first
            else { return nil }
            job.dispatchClaimedBy = claimer
            job.dispatchClaimExpiresAt = until
            job.updatedAt = Date()
            try await write(job, insert: false, on: connection)
            return job
        }
    }

    public func releaseClaim(_ id: String, by claimer: String) async throws {
        _ = try await update(id) { job in
            guard job.dispatchClaimedBy == claimer else { return }
            job.dispatchClaimedBy = nil
            job.dispatchClaimExpiresAt = nil
        }
    }

    public func countByStatus() async throws -> [Job.Status: Int] {
        try await pool.withConnection { [logger] connection in
            var out: [Job.Status: Int] = [:]
            for try await (status, n) in try await connection.query("SELECT status, count(*)::bigint FROM job GROUP BY status", logger: logger).decode((String, Int).self)
            {
                if let s = Job.Status(rawValue: status) { out[s] = n }
            }
            return out
        }
    }

    // MARK: - events and chunks

    public func appendEvent(_ event: StoredEvent) async throws -> Bool {
        try await inserted(
            "INSERT INTO event (job_id, seq, type, data) VALUES (\(event.jobID), \(event.seq), \(event.type), \(event.data)) ON CONFLICT DO NOTHING RETURNING seq")
    }

    public func appendBuildingEvent(_ event: StoredEvent, phase: String?, seenAt: Date, gateway: String) async throws -> Bool {
        try await pool.withTransaction { [self] connection in
            let stored = try await self.inserted(
                """
                INSERT INTO event (job_id, seq, type, data)
                SELECT \(event.jobID), \(event.seq), \(event.type), \(event.data)
                WHERE EXISTS (SELECT 1 FROM job WHERE id = \(event.jobID) AND status = 'building' AND ingested_by = \(gateway))
                ON CONFLICT DO NOTHING RETURNING seq
                """, on: connection)
            guard stored else { return false }
            // The Job document's own encoding of dates (seconds since 2001) and of a missing phase.
            let seen = seenAt.timeIntervalSinceReferenceDate
            try await connection.query(
                """
                UPDATE job SET doc = doc || jsonb_build_object('lastSeenAt', \(seen)::float8)
                    || CASE WHEN \(phase)::text IS NULL THEN '{}'::jsonb ELSE jsonb_build_object('phase', \(phase)::text) END
                WHERE id = \(event.jobID)
                """, logger: logger)
            return true
        }
    }

    private func inserted(_ query: PostgresQuery, on connection: PostgresConnection? = nil) async throws -> Bool {
        guard let connection else { return try await pool.withConnection { [self] in try await inserted(query, on: $0) } }
        let rows = try await connection.query(query, logger: logger)
        var any = false
        for try await _ in rows.decode(Int.self) { any = true }
        return any
    }

    public func events(job: String, after seq: Int) async throws -> [StoredEvent] {
        try await pool.withConnection { [logger] connection in
            var out: [StoredEvent] = []
            let rows = try await connection.query("SELECT seq, type, data FROM event WHERE job_id = \(job) AND seq > \(seq) ORDER BY seq", logger: logger)
            for try await (s, type, data) in rows.decode((Int, String, String).self) { out.append(StoredEvent(jobID: job, seq: s, type: type, data: data)) }
            return out
        }
    }

    public func lastSeq(job: String) async throws -> Int {
        try await count("SELECT coalesce(max(seq), 0) FROM event WHERE job_id = \(job)")
    }

    /// A query answering one number.
    private func count(_ query: PostgresQuery) async throws -> Int {
        try await pool.withConnection { [logger] connection in
            var n = 0
            for try await value in try await connection.query(query, logger: logger).decode(Int.self) { n = value }
            return n
        }
    }

    /// A statement whose rows, if any, are not needed.
    private func execute(_ statement: PostgresQuery) async throws {
        try await pool.withConnection { [logger] connection in _ = try await connection.query(statement, logger: logger) }
    }

    public func recordChunk(job: String, index: Int) async throws {
        try await execute("INSERT INTO chunk (job_id, idx) VALUES (\(job), \(index)) ON CONFLICT DO NOTHING")
    }

    public func chunks(job: String) async throws -> Set<Int> {
        try await pool.withConnection { [logger] connection in
            var out: Set<Int> = []
            for try await i in try await connection.query("SELECT idx FROM chunk WHERE job_id = \(job)", logger: logger).decode(Int.self) { out.insert(i) }
            return out
        }
    }

    public func clearChunks(job: String) async throws {
        try await execute("DELETE FROM chunk WHERE job_id = \(job)")
    }

    public func expiredResults(before: Date) async throws -> [Job] {
        try await jobs("SELECT doc::text FROM job WHERE result_sha256 IS NOT NULL AND retention_expires_at < \(before)")
    }

    public func resultReferences(sha256: String) async throws -> Int {
        try await count("SELECT count(*)::bigint FROM job WHERE result_sha256 = \(sha256)")
    }

    @discardableResult
    public func heartbeat(gateway: String, lease: Duration) async throws -> Int {
        try await execute("INSERT INTO gateway (id, seen_at) VALUES (\(gateway), now()) ON CONFLICT (id) DO UPDATE SET seen_at = now()")
        return try await count(
            "SELECT count(*)::bigint FROM gateway WHERE id <> \(gateway) AND seen_at >= now() - make_interval(secs => \(lease.seconds))")
    }

    public func retire(gateway: String) async throws {
        try await execute("DELETE FROM gateway WHERE id = \(gateway)")
    }

    public func adoptOrphans(by gateway: String, lease: Duration) async throws -> [Job] {
        try await pool.withTransaction { [self] connection in
            // Rows another gateway is adopting (or updating) right now are skipped, not waited for.
            var adopted: [Job] = []
            for var job in try await jobs(
                """
                SELECT doc::text FROM job
                WHERE status = 'building' AND (ingested_by IS NULL OR (ingested_by <> \(gateway) AND ingested_by NOT IN
                    (SELECT id FROM gateway WHERE seen_at >= now() - make_interval(secs => \(lease.seconds)))))
                ORDER BY position FOR UPDATE SKIP LOCKED
                """, on: connection)
            {
                job.ingestedBy = gateway
                job.updatedAt = Date()
                try await write(job, insert: false, on: connection)
                adopted.append(job)
            }
            return adopted
        }
    }

    /// PostgreSQL vacuums on its own.
    public func maintain() async throws {}
}

/// A job store that cannot be opened or used as configured.
public struct JobStoreError: Error, CustomStringConvertible {
    public var description: String
    public init(_ description: String) { self.description = description }
}
