import Foundation
import KilnArchive
import KilnAttestation
import KilnBusClient
import KilnMessages
import KilnTestSupport
import Testing

/// What a hostile build can and cannot do inside the sandbox, and the worker's one-build promise.
@Suite(.serialized) struct WorkerIsolationTests {
    static func archive(buildRS: String, name: String = "hostile") async throws -> String {
        Data(try await Fixtures.archive(Fixtures.helloCrate(name: name, buildRS: buildRS), root: name, zip: false)).base64EncodedString()
    }

    /// This machine's own non-loopback address (traffic to it never leaves the machine).
    static func hostAddress() -> String? {
        var addrs: UnsafeMutablePointer<ifaddrs>?
        guard getifaddrs(&addrs) == 0 else { return nil }
        defer { freeifaddrs(addrs) }
        var p = addrs
        while let a = p {
            if let sa = a.pointee.ifa_addr, sa.pointee.sa_family == UInt16(AF_INET) {
                var sin = UnsafeRawPointer(sa).load(as: sockaddr_in.self)
                var buf = [CChar](repeating: 0, count: 64)
                inet_ntop(AF_INET, &sin.sin_addr, &buf, 64)
                let s = String(decoding: buf.prefix(while: { $0 != 0 }).map { UInt8(bitPattern: $0) }, as: UTF8.self)
                if !s.hasPrefix("127.") { return s }
            }
            p = a.pointee.ifa_next
        }
        return nil
    }

    @Test func hostileBuildScriptIsContained() async throws {
        let broker = try await BrokerProcess()
        defer { broker.stop() }
        let dir = try TemporaryDirectory(prefix: "kiln-hostile")
        // A listener on all interfaces: reachable from the host, so only the sandbox can stop the build script.
        let outsidePort = try FreePort.pick()
        let listener = try await LaunchedProcess(
            "/usr/bin/python3",
            [
                "-c",
                """
                import socket, time
                s = socket.socket(); s.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1); s.bind(("0.0.0.0", \(outsidePort))); s.listen(5)
                print("listening", flush=True); time.sleep(600)
                """,
            ])
        defer { listener.stop() }
        _ = try await listener.waitForLine(prefix: "listening")
        let hostIP = Self.hostAddress() ?? "127.0.0.1"
        let keyPath = dir.file("farm-key.pem")
        let escape = dir.file("escaped-\(UUID().uuidString)")
        let buildRS = """
            use std::net::{TcpStream, SocketAddr};
            use std::time::Duration;
            fn probe(addr: &str) -> &'static str {
                let a: SocketAddr = addr.parse().unwrap();
                if TcpStream::connect_timeout(&a, Duration::from_secs(2)).is_ok() { "CONNECTED" } else { "blocked" }
            }
            fn main() {
                println!("cargo:warning=PROBE broker={}", probe("127.0.0.1:\(broker.port)"));
                println!("cargo:warning=PROBE outside={}", probe("\(hostIP):\(outsidePort)"));
                println!("cargo:warning=PROBE key={}", if std::fs::read("\(keyPath)").is_ok() { "READ" } else { "absent" });
                println!("cargo:warning=PROBE workerdir={}", if std::fs::read_dir("\(dir.path)").is_ok() { "VISIBLE" } else { "absent" });
                println!("cargo:warning=PROBE etc_shadow={}", if std::fs::read("/etc/shadow").is_ok() { "READ" } else { "absent" });
                let _ = std::fs::create_dir_all("\(dir.path)");
                println!("cargo:warning=PROBE write_escape={}", if std::fs::write("\(escape)", b"x").is_ok() { "wrote-in-sandbox" } else { "refused" });
                println!("cargo:warning=PROBE write_usr={}", if std::fs::write("/usr/kiln-escape", b"x").is_ok() { "WROTE" } else { "refused" });
                println!("cargo:warning=PROBE env_home={}", std::env::var("HOME").unwrap_or_default());
            }
            """
        let source = try await Self.archive(buildRS: buildRS)
        let (d, _, terminal, _) = try await runBuild(
            { job in
                BuildRequest(jobID: job, nonce: testNonce, sourceData: source, sourceName: "hostile.tar.gz")
            }, broker: broker, dir: dir)
        #expect(terminal.type == .done, "\(terminal.message ?? "")")
        let probes = d.logLines.filter { $0.contains("PROBE ") }
        func probe(_ name: String) -> String? {
            probes.first { $0.contains("PROBE \(name)=") }.flatMap { $0.components(separatedBy: "PROBE \(name)=").last }
        }
        #expect(probe("broker") == "blocked", "\(probes)")
        #expect(probe("outside") == "blocked", "\(probes)")
        #expect(probe("key") == "absent")
        #expect(probe("workerdir") == "absent")
        #expect(probe("etc_shadow") == "absent")
        #expect(probe("write_usr") == "refused")
        #expect(probe("env_home") == "/build/out/home")
        #expect(!FileManager.default.fileExists(atPath: escape), "a write outside scratch reached the host")
        #expect(!FileManager.default.fileExists(atPath: "/usr/kiln-escape"))
        // Without the sandbox the outside listener is reachable (so the probe above means something).
        #expect((try? RawSocket(port: outsidePort, host: hostIP)) != nil)
        await d.close()
    }

    @Test func forkBombAndMemoryHogAreStopped() async throws {
        let broker = try await BrokerProcess()
        defer { broker.stop() }
        let forkBomb = """
            fn main() {
                let mut children = Vec::new();
                loop {
                    match std::process::Command::new("/bin/sleep").arg("7").spawn() {
                        Ok(c) => children.push(c),
                        Err(e) => panic!("fork failed after {} children: {}", children.len(), e),
                    }
                }
            }
            """
        let source = try await Self.archive(buildRS: forkBomb, name: "forkbomb")
        let (d1, _, t1, _) = try await runBuild(
            { job in
                BuildRequest(jobID: job, nonce: testNonce, sourceData: source, sourceName: "fb.tar.gz")
            }, workerArgs: ["--max-processes", "64", "--build-timeout", "60"], broker: broker)
        #expect(t1.type == .failed)
        #expect(t1.failurePhase == "build")
        #expect(t1.message?.contains("limit of 64 processes") == true, "\(t1.message ?? "")")
        await d1.close()
        #expect(try Self.processes(matching: "/bin/sleep 7").isEmpty, "fork bomb children survived")

        let hog = """
            fn main() {
                let mut v: Vec<Vec<u8>> = Vec::new();
                for _ in 0..64 { v.push(vec![1u8; 64 << 20]); }
                println!("cargo:warning=allocated {}", v.len());
            }
            """
        let hogSource = try await Self.archive(buildRS: hog, name: "hog")
        let (d2, _, t2, _) = try await runBuild(
            { job in
                BuildRequest(jobID: job, nonce: testNonce, sourceData: hogSource, sourceName: "hog.tar.gz")
            }, workerArgs: ["--memory-mb", "256"], broker: broker)
        #expect(t2.type == .failed)
        #expect(t2.failurePhase == "build")
        #expect(t2.message?.contains("memory limit of 256 MiB") == true, "\(t2.message ?? "") \(d2.logLines.suffix(15))")
        await d2.close()
    }

    @Test func cancelMidBuildLeavesNoProcess() async throws {
        let broker = try await BrokerProcess()
        defer { broker.stop() }
        let dir = try TemporaryDirectory(prefix: "kiln-cancel")
        let slow = """
            fn main() {
                let _ = std::process::Command::new("/bin/sleep").arg("977").status();
            }
            """
        let dispatcher = try await TestDispatcher(port: broker.port)
        let worker = try await WorkerProcess(brokerPort: broker.port, dir: dir)
        try await worker.waitUntilReady(dispatcher.client)
        let reply = try await dispatcher.dispatch(
            BuildRequest(
                jobID: dispatcher.jobID, nonce: testNonce,
                sourceData: try Self.archive(buildRS: slow, name: "slow"), sourceName: "slow.tar.gz"))
        #expect(reply.accepted)
        // Wait until the build script's child is running, then cancel.
        #expect(try await eventually(within: .seconds(60), every: .milliseconds(100)) { try !Self.processes(matching: "/bin/sleep 977").isEmpty })
        let start = ContinuousClock.now
        try await dispatcher.control(ControlMessage(action: .cancel))
        let terminal = try await dispatcher.waitForTerminal(timeout: .seconds(10))
        #expect(terminal.type == .cancelled)
        #expect(ContinuousClock.now - start < .seconds(6), "cancel took \(ContinuousClock.now - start) (2 s on an idle machine)")
        #expect(try Self.processes(matching: "/bin/sleep 977").isEmpty, "a build process survived the cancel")
        #expect(try await worker.process.waitForExit(timeout: .seconds(30)) == 0)
        await dispatcher.close()
    }

    @Test func secondRequestGets409AndIsNeverBuilt() async throws {
        let broker = try await BrokerProcess()
        defer { broker.stop() }
        let dir = try TemporaryDirectory(prefix: "kiln-409")
        let first = try await TestDispatcher(port: broker.port)
        let second = try await TestDispatcher(port: broker.port)
        let worker = try await WorkerProcess(brokerPort: broker.port, dir: dir)
        try await worker.waitUntilReady(first.client)
        let archive = try await Fixtures.archive(Fixtures.helloCrate(), root: "hello", zip: false)
        let r1 = try await first.dispatch(BuildRequest(jobID: first.jobID, nonce: testNonce, sourceData: Data(archive).base64EncodedString()))
        #expect(r1.accepted)
        // The one-shot subscription is spent: a second dispatch finds no responders…
        await #expect(throws: BusClientError.noResponders(subject: Subjects.buildRequest)) {
            _ = try await second.dispatch(BuildRequest(jobID: second.jobID, nonce: testNonce, sourceData: Data(archive).base64EncodedString()))
        }
        // …and one addressed to this worker directly is refused with 409.
        let r2 = try await second.dispatch(
            BuildRequest(jobID: second.jobID, nonce: testNonce, sourceData: Data(archive).base64EncodedString()),
            subject: Subjects.workerRequest(worker.id))
        #expect(r2 == .alreadyBusy(workerID: worker.id))
        #expect(r2.code == 409 && r2.message == "this worker has already accepted a build")
        let t1 = try await first.waitForTerminal()
        #expect(t1.type == .done)
        #expect(try await worker.process.waitForExit() == 0)
        #expect(second.events.isEmpty, "the refused job produced events")
        await first.close()
        await second.close()
    }

    @Test func reproducibleAcrossWorkers() async throws {
        let broker = try await BrokerProcess()
        defer { broker.stop() }
        let archive = Data(try await Fixtures.archive(Fixtures.helloCrate(name: "repro"), root: "repro", zip: false)).base64EncodedString()
        var subjects: [[ResourceDescriptor]] = []
        for _ in 0..<2 {
            let (d, _, terminal, dir) = try await runBuild(
                { BuildRequest(jobID: $0, nonce: testNonce, sourceData: archive, sourceName: "repro.tar.gz") },
                broker: broker)
            #expect(terminal.type == .done)
            let unpacked = dir.file("u")
            try FileManager.default.createDirectory(atPath: unpacked, withIntermediateDirectories: true)
            _ = try ArchiveExtractor().extract(archivePath: try d.resultFile(), into: unpacked)
            let statement = try CanonicalJSON.decode(Statement.self, from: Array(try Data(contentsOf: URL(fileURLWithPath: unpacked + "/provenance.json"))))
            subjects.append(statement.subject)
            await d.close()
        }
        #expect(subjects[0] == subjects[1])
        #expect(!subjects[0].isEmpty)
    }

    static func processes(matching text: String) throws -> [Int32] {
        var found: [Int32] = []
        for entry in try FileManager.default.contentsOfDirectory(atPath: "/proc") {
            guard let pid = Int32(entry), let cmd = FileManager.default.contents(atPath: "/proc/\(entry)/cmdline") else { continue }
            let line = String(decoding: cmd.map { $0 == 0 ? 0x20 : $0 }, as: UTF8.self)
            if line.contains(text) { found.append(pid) }
        }
        return found
    }
}
