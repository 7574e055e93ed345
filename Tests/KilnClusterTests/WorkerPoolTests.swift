import Foundation
import KilnTestSupport
import Testing

/// kiln-pool on its own: keeps N idle, replaces idle workers that die.
@Suite(.serialized) struct WorkerPoolTests {
    func metric(_ port: Int, _ name: String) -> Double? {
        guard let body = try? HTTPGet.get(port: port, path: "/metrics").body else { return nil }
        return body.split(separator: "\n").first { $0.hasPrefix(name + " ") }.flatMap { Double($0.split(separator: " ")[1]) }
    }

    @Test func replacesIdleWorkersThatDie() async throws {
        let dir = try TemporaryDirectory(prefix: "kiln-pool")
        let broker = try await BrokerProcess()
        defer { broker.stop() }
        let monitor = try FreePort.pick()
        let pool = try LaunchedProcess(BuiltProducts.path("kiln-pool"),
                                       ["--broker", "kiln://127.0.0.1:\(broker.port)", "--idle", "2", "--max", "4", "--state", dir.file("pool"),
                                        "--key", dir.file("farm.pem"), "--monitor-port", String(monitor)])
        defer {
            pool.signal(SIGTERM)
            for _ in 0..<200 where pool.isRunning { usleep(50_000) }
        }
        func waitFor(_ what: String, _ check: () -> Bool) async throws {
            let deadline = ContinuousClock.now + .seconds(30)
            while !check() {
                if ContinuousClock.now > deadline { throw LaunchError("timed out waiting for \(what): \(pool.output.suffix(10))") }
                try await Task.sleep(for: .milliseconds(100))
            }
        }
        try await waitFor("2 ready") { metric(monitor, "kiln_pool_ready_workers") == 2 && Self.workerPIDs(dir.path).count == 2 }
        let started = try #require(metric(monitor, "kiln_pool_workers_started_total"))
        // Kill one idle worker: the pool starts a replacement.
        let victim = try #require(Self.workerPIDs(dir.path).first)
        kill(victim, SIGKILL)
        try await waitFor("a replacement") { metric(monitor, "kiln_pool_workers_started_total") == started + 1 && metric(monitor, "kiln_pool_ready_workers") == 2 }
        try await waitFor("two live workers") { Self.workerPIDs(dir.path).count == 2 }
        // SIGTERM stops the pool and its workers.
        pool.signal(SIGTERM)
        _ = try await pool.waitForExit(timeout: .seconds(20))
        try await Task.sleep(for: .milliseconds(500))
        #expect(Self.workerPIDs(dir.path).isEmpty)
    }

    static func workerPIDs(_ marker: String) -> [Int32] {
        ((try? FileManager.default.contentsOfDirectory(atPath: "/proc")) ?? []).compactMap(Int32.init).filter { pid in
            let cmd = String(decoding: FileManager.default.contents(atPath: "/proc/\(pid)/cmdline") ?? Data(), as: UTF8.self)
            let stat = String(decoding: FileManager.default.contents(atPath: "/proc/\(pid)/stat") ?? Data(), as: UTF8.self)
            let state = stat.split(separator: ")").last?.split(separator: " ").first
            return cmd.contains("kiln-worker") && cmd.contains(marker) && state != "Z"
        }
    }
}
