import Foundation
import KilnBusClient
import KilnProcess
import KilnTestSupport
import Logging
import Testing

@testable import KilnPool

/// The pool's bookkeeping, with real (harmless) processes standing in for workers.
@Suite struct WorkerPoolAccountingTests {
    func pool(_ dir: TemporaryDirectory, idle: Int, max: Int) throws -> WorkerPool {
        var configuration = WorkerPool.Configuration(launchTemplate: "sleep 30", broker: "kiln://127.0.0.1:1", stateDirectory: dir.file("pool"))
        configuration.idleTarget = idle
        configuration.maxWorkers = max
        try FileManager.default.createDirectory(atPath: dir.file("pool/workers"), withIntermediateDirectories: true)
        return WorkerPool(configuration: configuration, bus: .init(host: "127.0.0.1", port: 1), logger: Logger(label: "test"))
    }

    /// Before the count and the start shared one lock, callers racing (a job accepted while a worker
    /// exited) each saw room and each started one: 40 concurrent calls started 20-odd workers for a
    /// pool of at most 3.
    @Test func concurrentReplenishNeverOvershootsTheTarget() async throws {
        let dir = try TemporaryDirectory(prefix: "kiln-pool-acct")
        let pool = try pool(dir, idle: 2, max: 3)
        defer { pool.killAllForTesting() }
        // Forty real threads, released together: tasks on two cooperative threads rarely overlap.
        let threads = (0..<40).map { _ in Thread { pool.replenish() } }
        for t in threads { t.start() }
        #expect(await eventually { threads.allSatisfy(\.isFinished) })
        let counts = pool.counts
        #expect(counts.starting == 2 && counts.started == 2, "\(counts)")
    }

    @Test func aWorkerThatCannotStartIsReportedNotCounted() async throws {
        let dir = try TemporaryDirectory(prefix: "kiln-pool-acct")
        let pool = try pool(dir, idle: 2, max: 3)
        try FileManager.default.removeItem(atPath: dir.file("pool/workers"))  // its log file cannot be created
        pool.replenish()
        #expect(pool.counts.started == 0)
    }
}
