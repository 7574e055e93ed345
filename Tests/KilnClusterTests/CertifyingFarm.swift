import Crypto
import Foundation
import KilnAttestation
import KilnBus
import KilnBusClient
import KilnTestSupport
import Logging
import Testing

/// A farm whose workers hold no farm key (#19 item 3): kiln-broker with the production users file and
/// per-worker credentials, a gateway serving only the farm's public key, and kiln-pool holding the farm
/// key and certifying each worker's in-memory key. `launch` is the pool's template (process or VM).
struct CertifyingFarm {
    let dir: TemporaryDirectory
    let broker: BrokerProcess
    let gateway: GatewayProcess
    let pool: LaunchedProcess
    let monitorPort: Int
    let farmKey: SigningKey
    let credentialKey: Curve25519.Signing.PrivateKey

    var farmPublicKeyFile: String { dir.file("farm.pub") }

    static func start(
        dir: TemporaryDirectory, launch: String? = nil, maxWorkers: Int = 2, poolArguments: [String] = [], poolEnvironment: [String: String]? = nil
    ) async throws -> CertifyingFarm {
        let credential = SigningKey()
        try credential.write(to: dir.file("cred.pem"))
        try credential.publicKey.hex.write(toFile: dir.file("cred.pub"), atomically: true, encoding: .utf8)
        let farm = SigningKey()
        try farm.write(to: dir.file("farm.pem"))
        try farm.publicKey.hex.write(toFile: dir.file("farm.pub"), atomically: true, encoding: .utf8)
        let broker = try await BrokerProcess(arguments: ["--users", ProductionPermissionsTests.usersFile, "--credential-key", dir.file("cred.pub")])
        let gateway = try await GatewayProcess(
            brokerPort: broker.port, dataDirectory: dir.file("gw"),
            arguments: ["--broker", "kiln://gateway:change-me-gateway@127.0.0.1:\(broker.port)", "--public-key", dir.file("farm.pub")])
        // The workers get no key file at all: the default template's --key points nowhere.
        let template = launch.map { ["--launch", $0] } ?? ["--key", dir.file("no-such-key.pem"), "--worker-args=--certified-key"]
        let pool = try await LaunchedProcess(
            BuiltProducts.path("kiln-pool"),
            [
                "--broker", "kiln://pool:change-me-pool@127.0.0.1:\(broker.port)", "--idle", "1", "--max", String(maxWorkers), "--state", dir.file("pool"),
                "--credential-signing-key", dir.file("cred.pem"), "--credential-ttl", "900", "--farm-key", dir.file("farm.pem"),
                "--monitor-port", "0",
            ] + template + poolArguments, environment: poolEnvironment)
        let monitor = try #require(Int(try await pool.waitForLine(prefix: "kiln-pool monitor on http://127.0.0.1:")))
        return CertifyingFarm(
            dir: dir, broker: broker, gateway: gateway, pool: pool, monitorPort: monitor, farmKey: farm,
            credentialKey: try Curve25519.Signing.PrivateKey(rawRepresentation: credential.seed))
    }

    func stop() {
        pool.terminate(grace: .seconds(20))
        gateway.stop()
        broker.stop()
    }

    func metric(_ name: String) async -> Double? { await WorkerPoolTests().metric(monitorPort, name) }

    /// A bus connection holding a validly signed credential for worker `id` (what a leaked credential,
    /// or a compromised worker, could do).
    func connectAsWorker(_ id: String) async throws -> BusClient {
        let now = Int64(Date().timeIntervalSince1970)
        var bus = BusClient.Configuration(host: "127.0.0.1", port: broker.port, reconnect: false)
        bus.token = try WorkerCredential(workerID: id, issuedAt: now, expiresAt: now + 600).mint(key: credentialKey)
        bus.inboxNamespace = id
        return try await BusClient.connect(bus, logger: Logger(label: "as-\(id)"))
    }

    /// Submits a hello crate through the CLI, follows it and downloads the result; returns its path.
    func buildHello(name: String, nonce: String, buildRS: String? = nil, timeout: Duration = .seconds(180)) async throws -> String {
        try await build(files: Fixtures.helloCrate(name: name, buildRS: buildRS), name: name, nonce: nonce, timeout: timeout)
    }

    /// Submits `files` as a project (or, with `repo`, that repository at `ref`; with `directory`, that
    /// directory as it is) through the CLI, follows
    /// it and downloads the result; returns its path.
    func build(
        files: [String: String] = [:], repo: (url: String, ref: String)? = nil, directory: String? = nil, name: String, nonce: String,
        timeout: Duration = .seconds(180)
    ) async throws -> String {
        var source: [String]
        if let repo {
            source = ["--repo", repo.url, "--ref", repo.ref]
        } else if let directory {
            source = [directory]
        } else {
            let src = dir.file("src-\(name)")
            try Fixtures.write(files, to: src)
            source = [src]
        }
        var env = ProcessInfo.processInfo.environment
        env["KILN_GATEWAY"] = gateway.url
        let out = dir.file("result-\(name).tar.gz")
        let submit = try await LaunchedProcess(
            BuiltProducts.path("kiln"), ["submit"] + source + ["--nonce", nonce, "--follow", "-o", out], environment: env)
        let status = try await submit.waitForExit(timeout: timeout)
        guard status == 0 else { throw LaunchError("kiln submit failed (\(status)): \(submit.output.suffix(15))") }
        return out
    }

    /// `kiln verify --json` of `result` with only the farm key pinned: (exit status, the report or the error output).
    func verify(_ result: String, nonce: String, key: String? = nil) async throws -> (Int32, [String: Any]?, String) {
        let v = try await LaunchedProcess(
            BuiltProducts.path("kiln"), ["verify", result, "--nonce", nonce, "--key", key ?? farmPublicKeyFile, "--allow-tee-none", "--json"])
        let status = try await v.waitForExit()
        let text = v.output.joined(separator: "\n")
        let start = v.output.firstIndex { $0.hasPrefix("{") }
        let json = start.flatMap { try? JSONSerialization.jsonObject(with: Data(v.output[$0...].joined(separator: "\n").utf8)) as? [String: Any] }
        return (status, json, text)
    }
}
