import Crypto
import Foundation
import KilnTestSupport
import Testing

/// #19, first slice: a worker VM image built from Debian's packages, booted by `cluster/vm/launch-vm.sh`
/// under qemu (TCG here: nested KVM hangs on these machines), with a network that reaches the broker and
/// nothing else.
@Suite(.serialized) struct WorkerVMTests {
    static let root = LocalFarmTests.packageRoot + "/cluster/vm"

    /// Builds the image from this build's kiln-worker into `dir`; returns image.json's text.
    static func buildImage(into dir: String) async throws -> String {
        let p = try await LaunchedProcess(root + "/build-image.sh", [dir, BuiltProducts.path("kiln-worker")])
        // Copying ~200 MB of worker and libraries: seconds alone, over a minute beside the whole suite in CI.
        let status = try await p.waitForExit(timeout: .seconds(300))
        guard status == 0 else { throw LaunchError("build-image.sh failed (\(status)): \(p.output.suffix(10))") }
        return try String(contentsOfFile: dir + "/image.json", encoding: .utf8)
    }

    /// The VM's qemu processes still running for worker `id` (none once its launch has ended).
    static func qemuProcesses(worker id: String) async throws -> [String] {
        let out = try await Command.run("/bin/sh", ["-c", "pgrep -af qemu-system || true"])
        // "PID qemu-system-x86_64 …": qemu itself, not the `timeout` that wraps it.
        return out.split(separator: "\n").map(String.init).filter {
            $0.split(separator: " ").dropFirst().first?.hasPrefix("qemu-system") == true && $0.contains("kiln.worker_id=\(id) ")
        }
    }

    static func sha256(_ file: String) throws -> String {
        SHA256.hash(data: try Data(contentsOf: URL(fileURLWithPath: file))).map { String(format: "%02x", $0) }.joined()
    }

    @Test func theImageIsReproducibleAndNamesTheDigestsOfItsParts() async throws {
        let dir = try TemporaryDirectory()
        let first = try await Self.buildImage(into: dir.file("a"))
        let second = try await Self.buildImage(into: dir.file("b"))
        #expect(first == second, "two builds of the same inputs differ:\n\(first)\n\(second)")
        let json = try #require(try JSONSerialization.jsonObject(with: Data(first.utf8)) as? [String: Any])
        for part in ["kernel", "initramfs"] {
            let entry = try #require(json[part] as? [String: Any])
            let file = dir.file("a/\(try #require(entry["file"] as? String))")
            #expect(entry["sha256"] as? String == (try Self.sha256(file)), "\(part)")
        }
        #expect(json["kiln_worker_sha256"] as? String == (try Self.sha256(BuiltProducts.path("kiln-worker"))))
    }

    /// The guest reaches the broker through the one forwarded address and nothing else: not the
    /// host's other ports (not even the broker's own), not the host's DNS, not the outside.
    @Test func theGuestReachesTheBrokerAndNothingElse() async throws {
        let dir = try TemporaryDirectory()
        _ = try await Self.buildImage(into: dir.file("image"))
        let broker = try await BrokerProcess()
        defer { broker.stop() }
        let other = try await BrokerProcess()
        defer { other.stop() }
        let id = "wvm" + UUID().uuidString.prefix(8).lowercased()
        let probes = ["10.0.2.100:4222", "10.0.2.2:\(other.port)", "10.0.2.2:\(broker.port)", "10.0.2.3:53", "192.0.2.1:443"]
        // The worker's broker credential reaches the guest through fw_cfg, never the command line.
        let token = "kiln-token-" + UUID().uuidString
        var environment = ProcessInfo.processInfo.environment
        environment["KILN_BROKER_TOKEN"] = token
        let arguments = [
            "--image", dir.file("image"), "--id", id, "--mode", "check", "--accel", "tcg", "--deadline", "120",
            "--broker", "kiln://127.0.0.1:\(broker.port)", "--probe", probes.joined(separator: ","),
        ]
        let printed = try await LaunchedProcess(Self.root + "/launch-vm.sh", arguments + ["--print-command"], environment: environment)
        #expect(try await printed.waitForExit() == 0)
        #expect(!printed.output.joined().contains(token) && printed.output.joined().contains("opt/kiln/token"), "\(printed.output)")
        let vm = try await LaunchedProcess(Self.root + "/launch-vm.sh", arguments, environment: environment)
        defer { vm.stop() }
        #expect(try await vm.waitForExit() == 0, "\(vm.output.suffix(20))")
        // The guest's serial console ends its lines with CR LF.
        let lines = vm.output.filter { $0.contains("kiln-vm: probe") }.map { $0.trimmingCharacters(in: .whitespacesAndNewlines) }
        #expect(lines.contains("kiln-vm: probe 10.0.2.100:4222 reached"), "\(vm.output.suffix(20))")
        for probe in probes.dropFirst() {
            #expect(lines.contains("kiln-vm: probe \(probe) unreachable"), "\(probe): \(lines)")
        }
        #expect(vm.output.contains { $0.contains("kiln-vm: init at") })
        #expect(vm.output.contains { $0.contains("kiln-vm: broker credential received (\(token.utf8.count) bytes)") }, "\(vm.output.suffix(20))")
        #expect(try await Self.qemuProcesses(worker: id).isEmpty)
    }

    /// A worker boots in a fresh VM, connects to the broker through the forward and announces itself
    /// ready; with no build coming, the VM is killed at its deadline and nothing of it remains.
    @Test func aWorkerBootsJoinsTheBusAndIsKilledAtItsDeadline() async throws {
        let dir = try TemporaryDirectory()
        _ = try await Self.buildImage(into: dir.file("image"))
        let broker = try await BrokerProcess()
        defer { broker.stop() }
        let id = "wvm" + UUID().uuidString.prefix(8).lowercased()
        let started = ContinuousClock.now
        let vm = try await LaunchedProcess(
            Self.root + "/launch-vm.sh",
            ["--image", dir.file("image"), "--id", id, "--broker", "kiln://127.0.0.1:\(broker.port)", "--accel", "tcg", "--deadline", "25"])
        defer { vm.stop() }
        _ = try await vm.waitForLine(what: "the worker ready", timeout: .seconds(60)) { $0.contains("kiln.worker") && $0.contains(" ready") }
        print("worker VM (TCG): launch to ready in \(ContinuousClock.now - started)")
        #expect(try await Self.qemuProcesses(worker: id).count == 1)
        let status = try await vm.waitForExit()
        #expect(status != 0, "killed at the deadline")
        #expect(ContinuousClock.now - started < .seconds(40))
        #expect(try await Self.qemuProcesses(worker: id).isEmpty)
    }

    /// kiln-pool with the VM launch template keeps one VM worker ready, counts it like a process worker,
    /// exports its boot time, and a stopped pool leaves no VM behind.
    @Test func thePoolKeepsAVMWorkerReadyAndStopsIt() async throws {
        let dir = try TemporaryDirectory(prefix: "kiln-vm-pool")
        _ = try await Self.buildImage(into: dir.file("image"))
        let broker = try await BrokerProcess()
        defer { broker.stop() }
        let launch = "\(Self.root)/launch-vm.sh --image \(dir.file("image")) --id {id} --broker {broker} --accel tcg --deadline 300"
        let pool = try await LaunchedProcess(
            BuiltProducts.path("kiln-pool"),
            [
                "--broker", "kiln://127.0.0.1:\(broker.port)", "--idle", "1", "--max", "1", "--state", dir.file("pool"),
                "--key", dir.file("farm.pem"), "--monitor-port", "0", "--launch", launch,
            ])
        defer { pool.terminate() }
        let monitor = try #require(Int(try await pool.waitForLine(prefix: "kiln-pool monitor on http://127.0.0.1:")))
        let metrics = WorkerPoolTests()
        let ready = await eventually(within: .seconds(90), every: .milliseconds(200)) { metrics.metric(monitor, "kiln_pool_ready_workers") == 1 }
        #expect(ready, "\(pool.output.suffix(10))")
        let boots = metrics.metric(monitor, "kiln_pool_worker_boot_seconds_count")
        let bootSeconds = metrics.metric(monitor, "kiln_pool_worker_boot_seconds_sum")
        #expect(boots == 1, "boot time recorded once")
        print("VM worker through kiln-pool (TCG): launch to ready \(bootSeconds ?? -1) s")
        // (The bracket keeps the pattern from matching the shell that runs pgrep.)
        let vms = try await Command.run("/bin/sh", ["-c", "pgrep -f 'qemu-syste[m].*\(dir.path)' || true"])
        #expect(!vms.isEmpty, "a qemu process for the worker")
        pool.signal(SIGTERM)
        _ = try await pool.waitForExit(timeout: .seconds(30))
        #expect(await eventually(within: .seconds(15)) { ((try? await Command.run("/bin/sh", ["-c", "pgrep -f 'qemu-syste[m].*\(dir.path)' || true"])) ?? "x").isEmpty })
    }

    /// The confidential launch command lines (#19 item 4; no SEV-SNP or TDX host here, so only what
    /// launch-vm.sh generates is checked): the qemu objects and firmware for each, KVM required, and
    /// bad values refused with a message naming the option.
    @Test func confidentialLaunchCommandLines() async throws {
        let dir = try TemporaryDirectory()
        try FileManager.default.createDirectory(atPath: dir.file("image"), withIntermediateDirectories: true)
        for part in ["vmlinuz", "initramfs.cpio"] { try FileManager.default.writeFile(atPath: dir.file("image/\(part)"), contents: Data()) }
        func launch(_ extra: [String]) async throws -> (Int32, String) {
            let p = try await LaunchedProcess(
                Self.root + "/launch-vm.sh",
                ["--image", dir.file("image"), "--id", "w1", "--broker", "kiln://127.0.0.1:4222", "--print-command"] + extra)
            let status = try await p.waitForExit()
            return (status, p.output.joined(separator: "\n"))
        }
        let (snpStatus, snp) = try await launch(["--accel", "kvm", "--tee", "sev-snp"])
        #expect(snpStatus == 0, "\(snp)")
        for piece in ["-accel kvm", "confidential-guest-support=sev0", "sev-snp-guest", "kernel-hashes=on", "memory-backend-memfd", "-cpu EPYC-v4", "OVMF"] {
            #expect(snp.contains(piece), "sev-snp command lacks \(piece): \(snp)")
        }
        let (tdxStatus, tdx) = try await launch(["--accel", "kvm", "--tee", "tdx"])
        #expect(tdxStatus == 0, "\(tdx)")
        for piece in ["confidential-guest-support=tdx0", "tdx-guest", "kernel-irqchip=split"] { #expect(tdx.contains(piece), "tdx command lacks \(piece)") }
        let (plainStatus, plain) = try await launch(["--accel", "tcg"])
        #expect(plainStatus == 0 && plain.contains("restrict=on") && plain.contains("guestfwd=tcp:10.0.2.100:4222-tcp:127.0.0.1:4222"), "\(plain)")
        #expect(!plain.contains("sev") && !plain.contains("tdx"))
        for (bad, flag) in [
            (["--accel", "tcg", "--tee", "sev-snp"], "--tee sev-snp"), (["--tee", "sgx"], "--tee"), (["--deadline", "1"], "--deadline"),
            (["--id", "bad id"], "--id"), (["--broker", "http://x:1"], "--broker"), (["--probe", "x;y"], "--probe"), (["--memory", "050"], "--memory"),
        ] {
            let (status, output) = try await launch(bad)
            #expect(status != 0 && output.contains(flag), "\(bad): \(output)")
        }
    }
}
