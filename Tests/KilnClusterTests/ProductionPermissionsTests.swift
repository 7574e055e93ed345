import Crypto
import Foundation
import KilnAttestation
import KilnBus
import KilnBusClient
import KilnMessages
import KilnTestSupport
import Logging
import Testing

/// #11 item 2: the shipped production permissions (cluster/broker-users.production.json) with
/// per-worker credentials minted by the pool run a whole farm, uploads above the inline limit included;
/// a worker's credential cannot do what the role does not need.
@Suite(.serialized) struct ProductionPermissionsTests {
    static var usersFile: String { LocalFarmTests.packageRoot + "/cluster/broker-users.production.json" }

    /// The users file kiln-broker runs with and the rules Kiln's NATS users are minted with
    /// (`BusRoles`) are one set of rules: a change to one without the other fails here.
    @Test func theProductionUsersFileGrantsWhatBusRolesGrants() throws {
        let file = try JSONSerialization.jsonObject(with: Data(contentsOf: URL(fileURLWithPath: Self.usersFile))) as? [String: Any]
        let users = try #require(file?["users"] as? [[String: Any]])
        for (name, rules) in [("gateway", BusRoles.gateway), ("pool", BusRoles.pool), ("fetch", BusRoles.fetch)] {
            let user = try #require(users.first { $0["user"] as? String == name }, "no \(name) in the users file")
            let permissions = try #require(user["permissions"] as? [String: Any])
            func list(_ kind: String, _ rule: String) -> [String] { ((permissions[kind] as? [String: Any])?[rule] as? [String]) ?? [] }
            #expect(list("publish", "allow") == rules.publishAllow, "\(name) publish allow")
            #expect(list("publish", "deny") == rules.publishDeny, "\(name) publish deny")
            #expect(list("subscribe", "allow") == rules.subscribeAllow, "\(name) subscribe allow")
            #expect((permissions["allow_responses"] as? Bool ?? false) == rules.answersRequests, "\(name) allow_responses")
        }
    }

    @Test func aFarmRunsWithTheProductionUsersFileAndPerWorkerCredentials() async throws {
        let dir = try TemporaryDirectory(prefix: "kiln-prod")
        // The operator's credential key pair: the pool signs with the private half, the broker checks with the public one.
        let keygen = try await LaunchedProcess(BuiltProducts.path("kiln"), ["keys", "generate", dir.file("cred.pem")])
        _ = try await keygen.waitForExit()
        let shown = try await LaunchedProcess(BuiltProducts.path("kiln"), ["keys", "show", dir.file("cred.pem")])
        _ = try await shown.waitForExit()
        let hex = try #require(shown.output.first { $0.hasPrefix("hex") }?.split(separator: " ").last.map(String.init))
        try hex.write(toFile: dir.file("cred.pub"), atomically: true, encoding: .utf8)

        let broker = try await BrokerProcess(arguments: ["--users", Self.usersFile, "--credential-key", dir.file("cred.pub")])
        defer { broker.stop() }
        let farmKey = dir.file("farm.pem")
        let gateway = try await GatewayProcess(
            brokerPort: broker.port, dataDirectory: dir.file("gw"),
            arguments: [
                "--broker", "kiln://gateway:change-me-gateway@127.0.0.1:\(broker.port)", "--inline-source-limit", "1024", "--source-chunk-size", "1024",
            ])
        defer { gateway.stop() }
        let pool = try await LaunchedProcess(
            BuiltProducts.path("kiln-pool"),
            [
                "--broker", "kiln://pool:change-me-pool@127.0.0.1:\(broker.port)", "--idle", "1", "--max", "2", "--state", dir.file("pool"),
                "--key", farmKey, "--credential-signing-key", dir.file("cred.pem"), "--credential-ttl", "600",
            ])
        defer { pool.terminate() }
        // A source well above the inline limit: the worker fetches it in chunks over kiln.build.*.source.
        // Its build script takes a few seconds, so a leaked credential can be tried while it runs.
        var files = Fixtures.helloCrate(
            name: "big", message: "hello from a production farm",
            buildRS: "fn main() { std::thread::sleep(std::time::Duration::from_secs(4)); }\n")
        files["assets/blob.txt"] = (0..<4000).map { "line \($0) of padding so the upload is fetched in chunks\n" }.joined()
        let archive = try await Fixtures.archive(files, root: "big", zip: false)
        #expect(archive.count > 4 * 1024, "the upload must exceed the 1 KiB inline limit several times over")
        let source = Data(archive).base64EncodedString()
        let body = try JSONSerialization.data(withJSONObject: ["nonce": "abcd1234", "source_data": source, "source_name": "big.tar.gz"])
        try body.write(to: URL(fileURLWithPath: dir.file("body.json")))
        let curl = try await LaunchedProcess(
            "/usr/bin/curl",
            [
                "-sS", "-X", "POST", "-H", "Content-Type: application/json",
                "--data-binary", "@" + dir.file("body.json"), "-o", dir.file("submitted.json"), gateway.url + "/build",
            ])
        _ = try await curl.waitForExit()
        let submitted = try JSONSerialization.jsonObject(with: Data(contentsOf: URL(fileURLWithPath: dir.file("submitted.json")))) as? [String: Any]
        let id = try #require(submitted?["job_id"] as? String, "\(curl.output)")
        // A leaked credential of another worker (validly signed, not expired) tries everything.
        var building: [String: Any] = [:]
        await eventually(within: .seconds(60), every: .milliseconds(50)) {
            building = await (try? JSONSerialization.jsonObject(with: Data(try HTTPGet.get(port: gateway.port, path: "/build/\(id)").body.utf8)) as? [String: Any]) ?? [:]
            return building["status"] as? String == "building"
        }
        let realWorker = try #require(building["worker_id"] as? String, "\(building)")
        let operatorKey = try Curve25519.Signing.PrivateKey(rawRepresentation: SigningKey(contentsOf: dir.file("cred.pem")).seed)
        let now = Int64(Date().timeIntervalSince1970)
        var bus = BusClient.Configuration(host: "127.0.0.1", port: broker.port, reconnect: false)
        bus.token = try WorkerCredential(workerID: "wleaked", issuedAt: now, expiresAt: now + 600).mint(key: operatorKey)
        bus.inboxNamespace = "wleaked"
        let attacker = try await BusClient.connect(bus, logger: Logger(label: "attacker"))
        for (subject, queue) in [
            ("kiln.build.request", nil), ("kiln.build.request", "mine"), ("_INBOX.>", nil), ("kiln.build.*.source.*", nil),
            ("kiln.build.*.events.*", nil), ("kiln.worker.\(realWorker).request", nil),
        ] as [(String, String?)] {
            _ = try attacker.subscribe(subject, queue: queue)
            let denied = await attacker.asyncErrors.first(within: .seconds(30))
            #expect(denied?.code == 403, "subscribe \(subject) \(queue ?? ""): \(String(describing: denied))")
        }
        // In the real worker's name: the broker refuses the subject outright.
        var e = BuildEvent(jobID: id, seq: 1, type: .failed)
        e.workerID = realWorker
        e.message = "injected with a leaked credential"
        try await attacker.publish(Subjects.events(id, worker: realWorker), payload: e.encoded())
        let denied = await attacker.asyncErrors.first(within: .seconds(30))
        #expect(denied?.code == 403, "publish as \(realWorker): \(String(describing: denied))")
        // In its own name: the gateway refuses what does not come from the job's worker.
        for seq in 1...40 {
            var e = BuildEvent(jobID: id, seq: seq, type: .failed)
            e.workerID = realWorker
            e.message = "injected with a leaked credential"
            try await attacker.publish(Subjects.events(id, worker: "wleaked"), payload: e.encoded())
        }
        let stolen = try await attacker.request(Subjects.source(id, worker: "wleaked"), payload: [UInt8](), headers: ["index": "0"], timeout: .seconds(5))
        #expect(stolen.status == "403")
        let chunk = try await attacker.request(
            Subjects.result(id, worker: "wleaked"), payload: [UInt8](repeating: 0, count: 10),
            headers: [
                ResultChunkHeaders.index: "0", ResultChunkHeaders.count: "1", ResultChunkHeaders.sha256: String(repeating: "0", count: 64),
                ResultChunkHeaders.size: "10", ResultChunkHeaders.workerID: realWorker,
            ], timeout: .seconds(5))
        #expect(String(decoding: chunk.payloadBytes, as: UTF8.self).contains("403"))
        await attacker.close()

        var status = ""
        try await eventually(within: .seconds(120), every: .milliseconds(200)) {
            let r = try await HTTPGet.get(port: gateway.port, path: "/build/\(id)")
            status = (try? JSONSerialization.jsonObject(with: Data(r.body.utf8)) as? [String: Any])?["status"] as? String ?? ""
            return ["ready", "error", "cancelled"].contains(status)
        }
        let logs = ((try? FileManager.default.contentsOfDirectory(atPath: dir.file("pool/workers"))) ?? [])
            .compactMap { try? String(contentsOfFile: dir.file("pool/workers/") + $0, encoding: .utf8) }.joined(separator: "\n")
        let final = await (try? await HTTPGet.get(port: gateway.port, path: "/build/\(id)").body) ?? ""
        #expect(status == "ready", "\(final)\n\(logs.suffix(3000))")
        // The worker logged in with its own credential, not the pool's password.
        #expect(!logs.contains("change-me-pool"))
        let events = try await SSEClient.read(port: gateway.port, path: "/build/\(id)/events", timeout: 60)
        #expect(events.events.contains { $0.data.contains("\"accepted\"") })
        #expect(!events.events.contains { $0.data.contains("leaked credential") })
    }
}
