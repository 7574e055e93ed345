import AsyncHTTPClient
import Foundation
import KilnTestSupport
import NIOCore
import NIOHTTP1
import Testing

/// The local farm started exactly as `make run` starts it (cluster/farm.sh), driven like a newcomer
/// following the README: curl-style JSON with repo_url and with source_data, a multipart upload, and
/// `kiln submit --follow`; every result checked with `kiln verify` and the securesystemslib verifier.
@Suite(.serialized) struct LocalFarmTests {
    /// Starts one of the repository's scripts with an empty signal mask, as from a terminal: processes
    /// spawned from Swift's worker threads inherit blocked signals, and bash can neither unblock them
    /// nor trap them then (SIGTERM must reach the script so that it stops its own children).
    static func launchScript(_ path: String, environment: [String: String]) async throws -> LaunchedProcess {
        try await LaunchedProcess(
            "/usr/bin/python3",
            [
                "-c",
                "import os, signal, sys; signal.pthread_sigmask(signal.SIG_SETMASK, []); "
                    + "os.execv(sys.argv[1], sys.argv[1:])", packageRoot + "/" + path,
            ], environment: environment)
    }

    /// cluster/farm.sh's environment on free ports: broker, broker monitor, gateway, pool monitor, fetch monitor.
    static func farmEnvironment(state: String, idle: Int) throws -> (environment: [String: String], ports: [Int]) {
        let ports = try (0..<5).map { _ in try FreePort.pick() }
        var env = ProcessInfo.processInfo.environment
        env["BIN"] = BuiltProducts.directory
        env["KILN_STATE"] = state
        for (name, port) in zip(["KILN_BROKER_PORT", "KILN_BROKER_MONITOR_PORT", "KILN_GATEWAY_PORT", "KILN_POOL_MONITOR_PORT", "KILN_FETCH_MONITOR_PORT"], ports) {
            env[name] = String(port)
        }
        env["KILN_POOL_IDLE"] = String(idle)
        return (env, ports)
    }

    static var packageRoot: String {
        var url = URL(fileURLWithPath: #filePath)
        for _ in 0..<3 { url.deleteLastPathComponent() }
        return url.path
    }

    /// `make run` as it is typed, without KILN_WORKER_ARGS: the pool starts (an empty `--worker-args=`
    /// once made it exit with "Missing value").
    @Test func startsWithoutExtraWorkerArguments() async throws {
        let dir = try TemporaryDirectory(prefix: "kiln-farm")
        var env = try Self.farmEnvironment(state: dir.file("state"), idle: 1).environment
        env["KILN_WORKER_ARGS"] = nil
        let farm = try await Self.launchScript("cluster/farm.sh", environment: env)
        defer { farm.terminate(grace: .seconds(15)) }
        _ = try await farm.waitForLine(prefix: "Kiln is running.", timeout: .seconds(60))
        // #29: the broker `make run` starts is secure by default. A local process without credentials
        // (before: accepted, it published a `failed` event for another client's running job) is refused,
        // and the passwords it would need are the farm's own, in a root-only file.
        let brokerPort = try #require(Int(env["KILN_BROKER_PORT"] ?? ""))
        let stranger = try RawBusConnection(port: brokerPort)
        try await stranger.handshake()
        let refused = try await stranger.read(op: .err, timeout: 10)
        #expect(refused?.header.code == 401, "\(String(describing: refused?.header))")
        let users = try String(contentsOfFile: dir.file("state/keys/broker-users.json"), encoding: .utf8)
        #expect(!users.contains("change-me"), "the farm's broker passwords are its own")
        var st = stat()
        #expect(stat(dir.file("state/keys/broker-users.json"), &st) == 0 && st.st_mode & 0o077 == 0)
    }

    @Test func newcomerFlow() async throws {
        let dir = try TemporaryDirectory(prefix: "kiln-farm")
        let (farmEnv, ports) = try Self.farmEnvironment(state: dir.file("state"), idle: 2)
        var env = farmEnv
        // The documented ways to give workers and the fetch service extra flags (#18, #28): here, allowing
        // the test's git server.
        env["KILN_WORKER_ARGS"] = "--log-level debug"
        env["KILN_FETCH_ARGS"] = "--allow-source-host 127.0.0.1"
        let farm = try await Self.launchScript("cluster/farm.sh", environment: env)
        defer {
            // SIGTERM lets the farm stop its own children (SIGKILL would orphan them).
            farm.terminate(grace: .seconds(15))
        }
        _ = try await farm.waitForLine(prefix: "Kiln is running.", timeout: .seconds(60))
        let gateway = "http://127.0.0.1:\(ports[2])"
        let pubKey = dir.file("state/keys/farm.pub.pem")
        let git = try await GitFixture()
        defer { git.stop() }
        try await git.createRepository("hello", files: Fixtures.helloCrate(name: "fromgit"))
        let nonce = "00112233445566778899aabbccddeeff"

        func post(_ body: [UInt8], _ type: String) async throws -> String {
            var r = HTTPClientRequest(url: gateway + "/build")
            r.method = .POST
            r.headers.add(name: "Content-Type", value: type)
            r.body = .bytes(ByteBuffer(bytes: body))
            let resp = try await HTTPClient.shared.execute(r, timeout: .seconds(30))
            let text = String(buffer: try await resp.body.collect(upTo: 1 << 20))
            #expect(resp.status == .ok, "\(text)")
            return (try JSONSerialization.jsonObject(with: Data(text.utf8)) as! [String: Any])["job_id"] as! String
        }
        let archive = try await Fixtures.archive(Fixtures.helloCrate(name: "fromjson"), root: "fromjson", zip: false)
        let zip = try await Fixtures.archive(Fixtures.helloCrate(name: "frommultipart"), root: "frommultipart", zip: true)
        var form = Data("--B\r\nContent-Disposition: form-data; name=\"nonce\"\r\n\r\n\(nonce)\r\n".utf8)
        form += Data("--B\r\nContent-Disposition: form-data; name=\"source\"; filename=\"m.zip\"\r\n\r\n".utf8) + Data(zip) + Data("\r\n--B--\r\n".utf8)
        let jobs = [
            try await post(Array(try JSONSerialization.data(withJSONObject: ["nonce": nonce, "repo_url": git.url("hello"), "repo_ref": "main"])), "application/json"),
            try await post(
                Array(
                    try JSONSerialization.data(withJSONObject: [
                        "nonce": nonce, "source_data": Data(archive).base64EncodedString(),
                        "source_name": "fromjson.tar.gz",
                    ])), "application/json"),
            try await post(Array(form), "multipart/form-data; boundary=B"),
        ]
        var results: [String] = []
        for (i, id) in jobs.enumerated() {
            let sse = try await SSEClient.read(port: ports[2], path: "/build/\(id)/events", timeout: 180)
            #expect(sse.events.last?.event == "done", "job \(i): \(sse.events.suffix(3))")
            let file = dir.file("result-\(i).tar.gz")
            let r = HTTPClientRequest(url: gateway + "/build/\(id)/result")
            let resp = try await HTTPClient.shared.execute(r, timeout: .seconds(60))
            try Data(try await resp.body.collect(upTo: 64 << 20).readableBytesView).write(to: URL(fileURLWithPath: file))
            results.append(file)
        }
        // The same through the CLI.
        let src = dir.file("clisrc")
        try Fixtures.write(Fixtures.helloCrate(name: "fromcli"), to: src)
        var cliEnv = env
        cliEnv["KILN_GATEWAY"] = gateway
        let submit = try await LaunchedProcess(
            BuiltProducts.path("kiln"), ["submit", src, "--nonce", nonce, "--follow", "-o", dir.file("result-cli.tar.gz")],
            environment: cliEnv)
        #expect(try await submit.waitForExit(timeout: .seconds(180)) == 0, "\(submit.output.suffix(10))")
        #expect(submit.output.contains { $0.contains("phase build") })
        results.append(dir.file("result-cli.tar.gz"))

        for file in results {
            let v = try await LaunchedProcess(BuiltProducts.path("kiln"), ["verify", file, "--nonce", nonce, "--key", pubKey, "--allow-tee-none"])
            #expect(try await v.waitForExit() == 0, "\(file): \(v.output)")
            let python = Self.packageRoot + "/.venv/bin/python"
            if FileManager.default.isExecutableFile(atPath: python) {
                var penv = env
                penv["KILN_RESULT"] = file
                penv["KILN_NONCE"] = nonce
                let py = try await LaunchedProcess(python, ["-m", "pytest", "-q", Self.packageRoot + "/Tests/python/test_external_verifier.py"], environment: penv)
                #expect(try await py.waitForExit(timeout: .seconds(120)) == 0, "\(file): \(py.output.suffix(15))")
            }
        }

        // Every worker handled exactly one build and exited; the pool is back to 2 idle.
        let logs = try FileManager.default.contentsOfDirectory(atPath: dir.file("state/pool/workers"))
        var builds = 0
        for log in logs {
            let text = try String(contentsOfFile: dir.file("state/pool/workers/\(log)"), encoding: .utf8)
            let accepted = text.components(separatedBy: "event accepted").count - 1
            #expect(accepted <= 1, "\(log) accepted \(accepted) builds")
            builds += accepted
        }
        #expect(builds == 4)
        var metrics = ""
        await eventually(within: .seconds(30), every: .milliseconds(200)) {
            metrics = await (try? await HTTPGet.get(port: ports[3], path: "/metrics").body) ?? ""
            return metrics.contains("kiln_pool_idle_workers 2.0") && metrics.contains("kiln_pool_busy_workers 0.0")
        }
        #expect(metrics.contains("kiln_pool_idle_workers 2.0") && metrics.contains("kiln_pool_busy_workers 0.0"), "\(metrics)")
        #expect(metrics.contains("kiln_pool_workers_started_total 6"), "\(metrics)")
        // Ctrl-C / SIGTERM stops everything, with no orphan.
        farm.signal(SIGTERM)
        _ = try await farm.waitForExit(timeout: .seconds(30))
        var leftovers: [Int32] = []
        try await eventually(within: .seconds(60)) {
            leftovers = try FileManager.default.contentsOfDirectory(atPath: "/proc").compactMap { Int32($0) }.filter { pid in
                let cmd = String(decoding: FileManager.default.contents(atPath: "/proc/\(pid)/cmdline") ?? Data(), as: UTF8.self)
                return cmd.contains(dir.path) || cmd.contains("--port\u{0}\(ports[2])")
            }
            return leftovers.isEmpty
        }
        #expect(leftovers.isEmpty, "processes left after SIGTERM: \(leftovers)")
        withExtendedLifetime(dir) {}
    }
}
