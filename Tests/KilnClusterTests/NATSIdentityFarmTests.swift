import AsyncHTTPClient
import Crypto
import Foundation
import KilnAttestation
import KilnBus
import KilnBusClient
import KilnMessages
import KilnTestSupport
import Logging
import NIOCore
import Testing

/// #29 item 4: a farm on nats-server with Kiln's accounts (`kiln keys nats`), the pool minting each
/// worker a NATS user, and the hostile bus table of #11 against it: a leaked worker login (validly
/// signed, not expired) cannot inject into, steal from or finish a job it did not accept, and cannot
/// make the gateway publish where it may not.
@Suite(.serialized) struct NATSIdentityFarmTests {
    @Test func aLeakedWorkerLoginCannotInjectStealOrRedirectOnNATS() async throws {
        let dir = try TemporaryDirectory(prefix: "kiln-nats-farm")
        let server = try await Self.natsServerWithKilnAccounts(in: dir)
        defer { server.stop() }
        func env(_ role: String) -> [String: String] { Self.environment(of: role, in: dir) }
        let gateway = try await GatewayProcess(
            brokerPort: 0, dataDirectory: dir.file("gw"),
            arguments: ["--broker", server.url, "--inline-source-limit", "1024", "--source-chunk-size", "1024"], environment: env("gateway"))
        defer { gateway.stop() }
        // NATS stamps no sender: kiln-fetch takes the subject's worker id, which only that worker may publish on.
        let fetch = try await FetchServiceProcess(broker: server.url, state: dir.file("fetch"), environment: env("fetch"))
        defer { fetch.stop() }
        let farmKeygen = try await LaunchedProcess(BuiltProducts.path("kiln"), ["keys", "generate", dir.file("farm.pem")])
        _ = try await farmKeygen.waitForExit()
        let pool = try await LaunchedProcess(
            BuiltProducts.path("kiln-pool"),
            [
                "--broker", server.url, "--idle", "1", "--max", "2", "--state", dir.file("pool"), "--key", dir.file("farm.pem"),
                "--credential-signing-key", dir.file("cred.pem"), "--credential-ttl", "600",
            ], environment: env("pool"))
        defer { pool.terminate() }

        // A source above the inline limit (fetched in chunks) and a build that runs a few seconds.
        var files = Fixtures.helloCrate(
            name: "natsfarm", message: "hello over NATS", buildRS: "fn main() { std::thread::sleep(std::time::Duration::from_secs(4)); }\n")
        files["assets/blob.txt"] = (0..<2000).map { "line \($0) of padding so the upload is fetched in chunks\n" }.joined()
        let archive = try await Fixtures.archive(files, root: "natsfarm", zip: false)
        let body = try JSONSerialization.data(withJSONObject: ["nonce": "abcd1234", "source_data": Data(archive).base64EncodedString(), "source_name": "n.tar.gz"])
        var post = HTTPClientRequest(url: gateway.url + "/build")
        post.method = .POST
        post.headers.add(name: "Content-Type", value: "application/json")
        post.body = .bytes(ByteBuffer(bytes: body))
        let response = try await HTTPClient.shared.execute(post, timeout: .seconds(30))
        let submitted = String(buffer: try await response.body.collect(upTo: 1 << 20))
        let id = try #require((try JSONSerialization.jsonObject(with: Data(submitted.utf8)) as? [String: Any])?["job_id"] as? String, "\(submitted)")
        let building = try await status(of: id, gateway: gateway, in: ["building"], within: .seconds(120))
        let realWorker = try #require(building["worker_id"] as? String, "\(building)")

        // The leaked login: a worker user of the farm's own account, for another worker id.
        let attacker = try await Self.leakedWorkerLogin("wleaked", server: server, dir: dir)
        // In the real worker's name: nats-server refuses the subject.
        var forged = BuildEvent(jobID: id, seq: 1, type: .failed)
        forged.workerID = realWorker
        forged.message = "injected over NATS"
        try await attacker.publish(Subjects.events(id, worker: realWorker), payload: forged.encoded())
        #expect(await attacker.asyncErrors.first(within: .seconds(30))?.code == 403)
        _ = try attacker.subscribe(Subjects.eventsAll)
        #expect(await attacker.asyncErrors.first(within: .seconds(30))?.code == 403)
        try await attacker.publish(Subjects.control(id), payload: Array(#"{"action":"cancel"}"#.utf8))
        #expect(await attacker.asyncErrors.first(within: .seconds(30))?.code == 403)
        // In its own name: the gateway refuses what does not come from the job's worker.
        for seq in 1...40 {
            forged.seq = seq
            try await attacker.publish(Subjects.events(id, worker: "wleaked"), payload: forged.encoded())
        }
        let stolen = try await attacker.request(Subjects.source(id, worker: "wleaked"), payload: [UInt8](), headers: ["index": "0"], timeout: .seconds(10))
        #expect(stolen.status == "403" && stolen.payloadBytes.isEmpty)
        let chunk = try await attacker.request(
            Subjects.result(id, worker: "wleaked"), payload: [UInt8](repeating: 0, count: 10),
            headers: [
                ResultChunkHeaders.index: "0", ResultChunkHeaders.count: "1", ResultChunkHeaders.sha256: String(repeating: "0", count: 64),
                ResultChunkHeaders.size: "10", ResultChunkHeaders.workerID: realWorker,
            ], timeout: .seconds(10))
        #expect(String(decoding: chunk.payloadBytes, as: UTF8.self).contains("403"))
        // A request naming a job's control subject as its reply: the gateway and kiln-fetch (which may
        // publish there) must not answer onto it. A job of no one's, so that the gateway's own acks to
        // the real worker are not on it; the attacker listens where a worker may.
        let redirectTarget = Subjects.control("jredirected")
        let control = try attacker.subscribe(redirectTarget)
        try await attacker.flush()
        try await attacker.publish(Subjects.source(id, worker: "wleaked"), payload: [UInt8](), reply: redirectTarget, headers: ["index": "0"])
        try await attacker.publish(Subjects.fetch("wleaked", .plan), payload: Array("{}".utf8), reply: redirectTarget)
        let redirected = await control.first(within: .seconds(3))
        #expect(redirected == nil, "something was published onto the job's control subject: \(String(describing: redirected?.headers))")
        await attacker.close()

        let done = try await status(of: id, gateway: gateway, in: ["ready", "error", "cancelled"], within: .seconds(300))
        #expect(done["status"] as? String == "ready", "\(done)")
        let events = try await SSEClient.read(port: gateway.port, path: "/build/\(id)/events", timeout: 60)
        #expect(!events.events.contains { $0.data.contains("injected over NATS") })
        let metrics = try await HTTPGet.get(port: gateway.port, path: "/metrics").body
        func counter(_ reason: String) -> Int {
            metrics.split(separator: "\n").first { $0.hasPrefix("kiln_gateway_bus_messages_rejected_total{reason=\"\(reason)\"}") }
                .flatMap { $0.split(separator: " ").last.flatMap { Int($0) } } ?? 0
        }
        #expect(counter("wrong_sender") >= 40)
        #expect(counter("foreign_reply_subject") >= 1)
        #expect(await fetch.metric("kiln_fetch_refused_total{reason=\"forbidden\"}") ?? 0 >= 1)
    }

    /// #29 item 4's remainder: a worker that holds no key (a VM worker's way) gets its in-memory key
    /// certified by the pool on nats-server too. NATS stamps no sender, so the subject is the proof:
    /// only the worker's own minted user may publish on `kiln.worker.<id>.certify`. The build verifies
    /// with only the farm key as `farm-certified`. A leaked worker login cannot publish on a launched
    /// worker's certify subject (nats-server refuses), is refused on its own (the pool did not launch
    /// it), and cannot make the pool answer onto a subject of its choosing.
    @Test func workersWithoutAKeyAreCertifiedOnNATSAndOnlyByTheirOwnLogin() async throws {
        let dir = try TemporaryDirectory(prefix: "kiln-nats-certify")
        let keygen = try await LaunchedProcess(BuiltProducts.path("kiln"), ["keys", "generate", dir.file("farm.pem")])
        _ = try await keygen.waitForExit()
        try SigningKey(contentsOf: dir.file("farm.pem")).publicKey.hex.write(toFile: dir.file("farm.pub"), atomically: true, encoding: .utf8)
        let server = try await Self.natsServerWithKilnAccounts(in: dir)
        defer { server.stop() }
        func env(_ role: String) -> [String: String] { Self.environment(of: role, in: dir) }
        let gateway = try await GatewayProcess(
            brokerPort: 0, dataDirectory: dir.file("gw"), arguments: ["--broker", server.url, "--public-key", dir.file("farm.pub")], environment: env("gateway"))
        defer { gateway.stop() }
        let fetch = try await FetchServiceProcess(broker: server.url, state: dir.file("fetch"), environment: env("fetch"))
        defer { fetch.stop() }
        let pool = try await LaunchedProcess(
            BuiltProducts.path("kiln-pool"),
            [
                "--broker", server.url, "--idle", "1", "--max", "2", "--state", dir.file("pool"), "--key", dir.file("no-such-key.pem"),
                "--worker-args=--certified-key", "--credential-signing-key", dir.file("cred.pem"), "--credential-ttl", "600",
                "--farm-key", dir.file("farm.pem"), "--monitor-port", "0",
            ], environment: env("pool"))
        defer { pool.terminate() }
        let monitor = try #require(Int(try await pool.waitForLine(prefix: "kiln-pool monitor on http://127.0.0.1:")))

        // A build through a worker whose key the pool certified over NATS.
        let src = dir.file("src")
        try Fixtures.write(Fixtures.helloCrate(name: "natscert", message: "certified over NATS"), to: src)
        var cli = ProcessInfo.processInfo.environment
        cli["KILN_GATEWAY"] = gateway.url
        let result = dir.file("result.tar.gz")
        let submit = try await LaunchedProcess(BuiltProducts.path("kiln"), ["submit", src, "--nonce", "abcd1234", "--follow", "-o", result], environment: cli)
        #expect(try await submit.waitForExit(timeout: .seconds(300)) == 0, "\(submit.output.suffix(15))")
        let verify = try await LaunchedProcess(
            BuiltProducts.path("kiln"), ["verify", result, "--nonce", "abcd1234", "--key", dir.file("farm.pub"), "--allow-tee-none", "--json"])
        #expect(try await verify.waitForExit() == 0, "\(verify.output.suffix(15))")
        #expect(verify.output.joined().replacingOccurrences(of: " ", with: "").contains("\"key_trust\":\"farm-certified\""), "\(verify.output.suffix(15))")

        // The worker launched for the next job, still waiting to be certified or already certified.
        let launched = try #require(
            try FileManager.default.contentsOfDirectory(atPath: dir.file("pool/workers")).map { String($0.dropLast(".log".count)) }.first)
        let attacker = try await Self.leakedWorkerLogin("wleaked", server: server, dir: dir)
        defer { Task { await attacker.close() } }
        let request = Array(try JSONEncoder().encode(WorkerCertificateRequest(workerID: launched, publicKey: SigningKey().publicKey.hex)))
        // Another worker's certify subject: nats-server refuses the publish.
        try await attacker.publish(Subjects.workerCertify(launched), payload: request, reply: "_INBOX.wleaked.x")
        #expect(await attacker.asyncErrors.first(within: .seconds(30))?.code == 403)
        // Its own: the pool did not launch it.
        let own = Array(try JSONEncoder().encode(WorkerCertificateRequest(workerID: "wleaked", publicKey: SigningKey().publicKey.hex)))
        let refused = try await attacker.request(Subjects.workerCertify("wleaked"), payload: own, timeout: .seconds(10))
        let answer = try JSONDecoder().decode(WorkerCertificateReply.self, from: Data(refused.payloadBytes))
        #expect(answer.certificate == nil && answer.error?.contains("did not launch") == true, "\(answer)")
        // Its own, answered onto a job's control subject: the pool publishes nothing there.
        let control = try attacker.subscribe(Subjects.control("jredirected"))
        try await attacker.flush()
        try await attacker.publish(Subjects.workerCertify("wleaked"), payload: own, reply: Subjects.control("jredirected"))
        let redirected = await control.first(within: .seconds(3))
        #expect(
            redirected == nil,
            "the pool answered onto the job's control subject: \(String(describing: redirected.map { String(decoding: $0.payloadBytes, as: UTF8.self) }))")
        let metrics = try await HTTPGet.get(port: monitor, path: "/metrics").body
        let refusedCount = metrics.split(separator: "\n").first { $0.hasPrefix("kiln_pool_certificates_refused_total") }.flatMap {
            $0.split(separator: " ").last.flatMap { Double($0) }
        }
        #expect((refusedCount ?? 0) >= 2, "\(metrics.split(separator: "\n").filter { $0.contains("certif") })")
    }

    /// A nats-server with Kiln's accounts (`kiln keys nats`) made from a fresh credential key `dir/cred.pem`;
    /// each role's `.creds` in `dir/nats`.
    static func natsServerWithKilnAccounts(in dir: TemporaryDirectory) async throws -> NATSServerProcess {
        let keygen = try await LaunchedProcess(BuiltProducts.path("kiln"), ["keys", "generate", dir.file("cred.pem")])
        _ = try await keygen.waitForExit()
        let setup = try await LaunchedProcess(BuiltProducts.path("kiln"), ["keys", "nats", "--credential-key", dir.file("cred.pem"), "--out", dir.file("nats")])
        #expect(try await setup.waitForExit() == 0, "\(setup.output)")
        return try await NATSServerProcess(arguments: ["-c", dir.file("nats/nats-server.conf")])
    }

    /// The environment of a process logging in as `role` (its `.creds` from `natsServerWithKilnAccounts`).
    static func environment(of role: String, in dir: TemporaryDirectory) -> [String: String] {
        ProcessInfo.processInfo.environment.merging(["KILN_BROKER_CREDS": dir.file("nats/\(role).creds")]) { $1 }
    }

    /// A leaked login: a worker user of the farm's own account for worker `id`, validly signed and not
    /// expired, that no pool launched.
    static func leakedWorkerLogin(_ id: String, server: NATSServerProcess, dir: TemporaryDirectory) async throws -> BusClient {
        let accountKey = NATSKey(role: .account, privateKey: try Curve25519.Signing.PrivateKey(rawRepresentation: SigningKey(contentsOf: dir.file("cred.pem")).seed))
        var bus = try BusClient.Configuration(url: server.url)
        bus.reconnect = false
        bus.inboxNamespace = id
        bus.natsCredentials = try NATSAccountSetup.user(
            BusRoles.worker(id), name: "worker:\(id)", accountKey: accountKey, expires: Int64(Date().timeIntervalSince1970) + 600,
            now: Int64(Date().timeIntervalSince1970))
        return try await BusClient.connect(bus, logger: Logger(label: "leaked-\(id)"))
    }

    func status(of id: String, gateway: GatewayProcess, in wanted: Set<String>, within limit: Duration) async throws -> [String: Any] {
        var last: [String: Any] = [:]
        _ = await eventually(within: limit, every: .milliseconds(100)) {
            guard let body = try? await HTTPGet.get(port: gateway.port, path: "/build/\(id)").body else { return false }  // not answering yet: poll again
            last = (try? JSONSerialization.jsonObject(with: Data(body.utf8)) as? [String: Any]) ?? [:]
            return (last["status"] as? String).map(wanted.contains) ?? false
        }
        return last
    }
}
