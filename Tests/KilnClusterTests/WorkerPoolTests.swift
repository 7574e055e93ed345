import Foundation
import KilnTestSupport
import Testing

/// kiln-pool on its own: keeps N idle, replaces idle workers that die.
@Suite(.serialized) struct WorkerPoolTests {
    func metric(_ port: Int, _ name: String) async -> Double? {
        guard let body = try? await HTTPGet.get(port: port, path: "/metrics").body else { return nil }  // not up (yet): no value
        return body.split(separator: "\n").first { $0.hasPrefix(name + " ") }.flatMap { Double($0.split(separator: " ")[1]) }
    }

    @Test func replacesIdleWorkersThatDie() async throws {
        let dir = try TemporaryDirectory(prefix: "kiln-pool")
        let broker = try await BrokerProcess()
        defer { broker.stop() }
        let pool = try await LaunchedProcess(
            BuiltProducts.path("kiln-pool"),
            [
                "--broker", "kiln://127.0.0.1:\(broker.port)", "--idle", "2", "--max", "4", "--state", dir.file("pool"),
                "--key", dir.file("farm.pem"), "--monitor-port", "0",
            ])
        defer { pool.terminate() }
        let monitor = try #require(Int(try await pool.waitForLine(prefix: "kiln-pool monitor on http://127.0.0.1:")))
        func waitFor(_ what: String, _ check: () async -> Bool) async throws {
            guard await eventually(within: .seconds(30), every: .milliseconds(100), check) else {
                throw LaunchError("timed out waiting for \(what): \(pool.output.suffix(10))")
            }
        }
        try await waitFor("2 ready") {
            let ready = await metric(monitor, "kiln_pool_ready_workers")
            return ready == 2 && Self.workerPIDs(dir.path).count == 2
        }
        let started = try #require(await metric(monitor, "kiln_pool_workers_started_total"))
        // Kill one idle worker: the pool starts a replacement.
        let victim = try #require(Self.workerPIDs(dir.path).first)
        kill(victim, SIGKILL)
        try await waitFor("a replacement") {
            let (total, ready) = (await metric(monitor, "kiln_pool_workers_started_total"), await metric(monitor, "kiln_pool_ready_workers"))
            return total == started + 1 && ready == 2
        }
        try await waitFor("two live workers") { Self.workerPIDs(dir.path).count == 2 }
        // SIGTERM stops the pool and its workers.
        pool.signal(SIGTERM)
        _ = try await pool.waitForExit(timeout: .seconds(20))
        #expect(await eventually { Self.workerPIDs(dir.path).isEmpty })
    }

    /// A launched worker that never announces itself (a VM that never boots) is killed at the boot
    /// timeout and replaced; the kill is counted. An out-of-range timeout is refused at start.
    @Test func aWorkerThatNeverJoinsIsKilledAtItsBootTimeoutAndReplaced() async throws {
        let dir = try TemporaryDirectory(prefix: "kiln-pool")
        let broker = try await BrokerProcess()
        defer { broker.stop() }
        // A launch that never connects, with a command line no other process has.
        let marker = "sleep 1000.\(UInt32.random(in: 1...UInt32.max))"
        let pool = try await LaunchedProcess(
            BuiltProducts.path("kiln-pool"),
            [
                "--broker", "kiln://127.0.0.1:\(broker.port)", "--idle", "1", "--max", "1", "--state", dir.file("pool"),
                "--key", dir.file("farm.pem"), "--monitor-port", "0", "--boot-timeout", "2",
                "--launch", marker,
            ])
        defer { pool.terminate() }
        let monitor = try #require(Int(try await pool.waitForLine(prefix: "kiln-pool monitor on http://127.0.0.1:")))
        let replaced = await eventually(within: .seconds(30), every: .milliseconds(200)) {
            let (timeouts, started) = (await metric(monitor, "kiln_pool_boot_timeouts_total") ?? 0, await metric(monitor, "kiln_pool_workers_started_total") ?? 0)
            return timeouts >= 1 && started >= 2
        }
        #expect(replaced, "\(pool.output.suffix(10))")
        #expect(pool.output.contains { $0.contains("did not announce itself within 2 s") })
        // One stand-in at a time (max 1): the killed one is gone.
        let running = try await Command.run("/bin/sh", ["-c", "pgrep -fc '^\(marker)' || true"])
        #expect(Int(running.trimmingCharacters(in: .whitespacesAndNewlines)) ?? 99 <= 1)

        let refused = try await LaunchedProcess(
            BuiltProducts.path("kiln-pool"), ["--broker", "kiln://127.0.0.1:1", "--state", dir.file("p2"), "--boot-timeout", "0"])
        #expect(try await refused.waitForExit() != 0)
        #expect(refused.output.joined().contains("--boot-timeout"))
    }

    /// A worker SIGKILLed mid-build leaves its sandbox cgroups (with a process still in them), its
    /// workspace mount and its scratch directory; the pool removes all of them and logs the real cause.
    @Test func cleansUpAfterABusyWorkerKilledWithSIGKILL() async throws {
        let dir = try TemporaryDirectory(prefix: "kiln-pool")
        let broker = try await BrokerProcess()
        defer { broker.stop() }
        let gateway = try await GatewayProcess(brokerPort: broker.port, dataDirectory: dir.file("gw"))
        defer { gateway.stop() }
        let pool = try await LaunchedProcess(
            BuiltProducts.path("kiln-pool"),
            [
                "--broker", "kiln://127.0.0.1:\(broker.port)", "--idle", "1", "--max", "2", "--state", dir.file("pool"),
                "--key", dir.file("farm.pem"),
            ])
        defer { pool.terminate() }
        func waitFor(_ what: String, timeout: Duration = .seconds(60), _ check: () -> Bool) async throws {
            guard await eventually(within: timeout, every: .milliseconds(100), check) else {
                throw LaunchError("timed out waiting for \(what): \(pool.output.suffix(10))")
            }
        }
        try await waitFor("a ready worker") { Self.workerPIDs(dir.path).count == 1 && pool.output.contains { $0.contains("idle=1") } }
        let marker = "kiln-orphan-\(UInt32.random(in: 0...UInt32.max))"
        let buildRS = """
            fn main() {
                let _ = std::process::Command::new("/bin/sh").arg("-c").arg("sleep 600; : \(marker)").spawn();
                std::thread::sleep(std::time::Duration::from_secs(600));
            }
            """
        let source = Data(try await Fixtures.archive(Fixtures.helloCrate(name: "slow", buildRS: buildRS), root: "slow", zip: false)).base64EncodedString()
        let body = try JSONSerialization.data(withJSONObject: ["nonce": "abcd1234", "source_data": source, "source_name": "slow.tar.gz"])
        try body.write(to: URL(fileURLWithPath: dir.file("body.json")))
        let curl = try await LaunchedProcess(
            "/usr/bin/curl",
            [
                "-sS", "-X", "POST", "-H", "Content-Type: application/json",
                "--data-binary", "@" + dir.file("body.json"), gateway.url + "/build",
            ])
        _ = try await curl.waitForExit()
        // Wait until the build script runs (its orphan-to-be exists), then kill the busy worker.
        try await waitFor("the build script") { !Self.pids(matching: marker).isEmpty }
        let scratchRoot = dir.file("pool/scratch")
        // The busy worker is the one whose scratch directory has a workspace.
        let building = try #require(
            ((try? FileManager.default.contentsOfDirectory(atPath: scratchRoot)) ?? [])
                .first { FileManager.default.fileExists(atPath: scratchRoot + "/" + $0 + "/job/src") })
        let busy = try #require(
            Self.workerPIDs(dir.path).first { pid in
                String(decoding: FileManager.default.contents(atPath: "/proc/\(pid)/cmdline") ?? Data(), as: UTF8.self).contains(building)
            })
        let mountsBefore = String(decoding: FileManager.default.contents(atPath: "/proc/self/mountinfo") ?? Data(), as: UTF8.self)
        #expect(geteuid() != 0 || mountsBefore.contains(scratchRoot), "the busy worker's workspace is mounted")
        kill(busy, SIGKILL)
        try await waitFor("the pool's clean-up") { pool.output.contains { $0.contains("worker died during its build (killed by signal 9)") } }
        let line = pool.output.first { $0.contains("killed by signal 9") } ?? ""
        #expect(line.contains("deleted scratch directory"), "\(line)")
        #expect(!pool.output.contains { $0.contains("finished its build") && $0.contains("signal") })
        try await waitFor("the orphan to be gone", timeout: .seconds(10)) { Self.pids(matching: marker).isEmpty }
        let mountsAfter = String(decoding: FileManager.default.contents(atPath: "/proc/self/mountinfo") ?? Data(), as: UTF8.self)
        #expect(!mountsAfter.contains(scratchRoot), "a workspace mount was left behind")
        let leftCgroups = ["memory", "pids"].flatMap { c in
            ((try? FileManager.default.contentsOfDirectory(atPath: "/sys/fs/cgroup/" + c)) ?? []).filter { $0.hasPrefix("kiln-") && $0.hasSuffix("-\(busy)") }
        }
        #expect(leftCgroups.isEmpty, "\(leftCgroups)")
        #expect(!FileManager.default.fileExists(atPath: scratchRoot + "/" + building), "the dead worker's scratch directory is still there")
    }

    static func pids(matching marker: String) -> [Int32] {
        ((try? FileManager.default.contentsOfDirectory(atPath: "/proc")) ?? []).compactMap(Int32.init).filter { pid in
            String(decoding: FileManager.default.contents(atPath: "/proc/\(pid)/cmdline") ?? Data(), as: UTF8.self).contains(marker)
        }
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
