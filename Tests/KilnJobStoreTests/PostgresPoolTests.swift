import Foundation
import KilnJobStore
import KilnJobs
import KilnTestSupport
import Logging
import Synchronization
import Testing

/// The job store on a PostgreSQL that restarts under load. With postgres-nio 1.33.2 alone, queries in
/// flight when the server went away waited for ever and kept their pool slots: after two or three
/// restarts every operation hung (watched: eight updaters stuck for minutes). The store's
/// `PostgresPool` bounds each operation and replaces a pool that stopped answering.
@Suite(.serialized) struct PostgresPoolTests {
    final class Tally: Sendable {
        let done = Mutex(0)
        let longest = Mutex(Duration.zero)
        let stop = Mutex(false)
        let ended = Mutex(false)
    }

    @Test func restartsUnderLoadNeverStrandTheStore() async throws {
        let server = try await PostgresProcess()
        defer { server.stop() }
        let timeout = Duration.seconds(5)
        // Connecting and migrating may take longer than the deadline on a loaded machine: retried.
        var connected: PostgresJobStore?
        _ = await eventually(within: .seconds(60)) {
            connected = try? await PostgresJobStore.connect(url: server.url, operationTimeout: timeout, logger: Logger(label: "test"))
            return connected != nil
        }
        let store = try #require(connected)
        // Set-up may be slow on a loaded machine: each enqueue is retried until it lands.
        for i in 0..<8 {
            let enqueued = await eventually(within: .seconds(60)) {
                if case .some(.some) = try? await store.job("jr\(i)") { return true }
                return (try? await store.enqueue(JobStoreContractTests.job("jr\(i)"))) != nil
            }
            try #require(enqueued)
        }
        let tally = Tally()
        let load = Task {
            defer { tally.ended.withLock { $0 = true } }
            await withTaskGroup(of: Void.self) { group in
                for i in 0..<8 {
                    group.addTask {
                        while !tally.stop.withLock({ $0 }) {
                            let started = ContinuousClock.now
                            let ok = (try? await store.update("jr\(i)") { $0.dispatchAttempts += 1 }) != nil
                            let took = ContinuousClock.now - started
                            tally.longest.withLock { $0 = max($0, took) }
                            if ok { tally.done.withLock { $0 += 1 } }
                        }
                    }
                }
            }
        }
        for round in 0..<4 {
            let before = tally.done.withLock { $0 }
            try await server.restart(downFor: .seconds(1))
            // Within two deadlines of the server's return, updates succeed again.
            let resumed = await eventually(within: .seconds(60)) { tally.done.withLock { $0 } > before + 20 }
            #expect(resumed, "round \(round): no updates after the restart (\(tally.done.withLock { $0 }) done)")
        }
        tally.stop.withLock { $0 = true }
        // Every updater returns: none is stranded on a query that will never answer.
        #expect(await eventually(within: .seconds(60)) { tally.ended.withLock { $0 } })
        load.cancel()
        // No caller waited far past the deadline (the slack is for a loaded 2-core machine; a stranded
        // caller would wait for ever).
        #expect(tally.longest.withLock { $0 } < timeout + .seconds(30), "longest operation: \(tally.longest.withLock { $0 })")
    }
}
