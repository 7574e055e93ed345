import AsyncHTTPClient
import Foundation
import KilnTestSupport
import NIOCore
import NIOHTTP1

/// Broker + gateway (+ workers on demand) as real processes on loopback.
final class TestCluster: @unchecked Sendable {
    let dir: TemporaryDirectory
    let broker: BrokerProcess
    var gateway: GatewayProcess
    let keyFile: String
    var workers: [LaunchedProcess] = []
    /// The ids of `workers`, in the same order.
    var workerIDs: [String] = []
    let gatewayArgs: [String]
    /// Where workers connect (default: the Kiln broker); a NATS farm gives its nats-server's URL.
    var workerBrokerURL: String?
    /// The farm's fetch service, started with the first worker (or by `startFetchService`).
    var fetch: FetchServiceProcess?

    /// `brokerURLForGateway` gives the gateway credentials (from the broker's port) when the broker needs them.
    init(
        gatewayArgs: [String] = [], brokerArgs: [String] = [], brokerURLForGateway: ((Int) -> String)? = nil,
        gatewayEnvironment: [String: String]? = nil
    ) async throws {
        dir = try TemporaryDirectory(prefix: "kiln-cluster")
        broker = try await BrokerProcess(arguments: brokerArgs)
        keyFile = dir.file("farm.pem")
        let gen = try await LaunchedProcess(BuiltProducts.path("kiln"), ["keys", "generate", keyFile])
        _ = try await gen.waitForExit()
        let brokerPort = broker.port
        // A worker (often a stand-in in the test itself) has 30 s to accept, not the default 5: on a
        // loaded machine (a CI runner beside a TCG VM) a 5 s window expired and the job stayed waiting.
        // A test about the window sets its own.
        let ackWindow = gatewayArgs.contains("--ack-timeout") ? [] : ["--ack-timeout", "30"]
        self.gatewayArgs = ackWindow + gatewayArgs + (brokerURLForGateway.map { ["--broker", $0(brokerPort)] } ?? [])
        gateway = try await GatewayProcess(
            brokerPort: broker.port, dataDirectory: dir.file("gw"), arguments: ["--public-key", keyFile] + self.gatewayArgs,
            environment: gatewayEnvironment)
    }

    /// Restarts the gateway on the same port and data directory (after a SIGKILL, say).
    func restartGateway() async throws {
        let port = gateway.port
        gateway.stop()
        gateway = try await GatewayProcess(
            brokerPort: broker.port, dataDirectory: dir.file("gw"), port: port,
            arguments: ["--public-key", keyFile] + gatewayArgs)
    }

    /// Starts the fetch service (once): `registry` is its Cargo registry, `brokerURL` where it connects
    /// (default: where workers connect).
    @discardableResult
    func startFetchService(registry: String? = nil, brokerURL: String? = nil, environment: [String: String]? = nil) async throws -> FetchServiceProcess {
        if let fetch { return fetch }
        let started = try await FetchServiceProcess(
            broker: brokerURL ?? workerBrokerURL ?? "kiln://127.0.0.1:\(broker.port)", state: dir.file("fetch"), registry: registry,
            environment: environment)
        fetch = started
        return started
    }

    @discardableResult
    func startWorker(_ extra: [String] = [], environment: [String: String]? = nil) async throws -> LaunchedProcess {
        // A worker given its own broker URL (with credentials) shares it with the fetch service.
        let brokerArgument = extra.firstIndex(of: "--broker").flatMap { extra.indices.contains($0 + 1) ? extra[$0 + 1] : nil }
        try await startFetchService(brokerURL: brokerArgument)
        let id = "w" + UUID().uuidString.prefix(8).lowercased()
        let w = try await LaunchedProcess(
            BuiltProducts.path("kiln-worker"),
            [
                "--broker", workerBrokerURL ?? "kiln://127.0.0.1:\(broker.port)", "--worker-id", id, "--scratch", dir.file("scratch-\(id)"),
                "--key", keyFile, "--idle-timeout", "300",
            ] + extra,
            environment: environment)
        workers.append(w)
        workerIDs.append(id)
        try await w.waitUntilWorkerReady()
        return w
    }

    typealias HTTPResult = GatewayHTTP.Result

    /// The gateway's HTTP API (a new value after `restartGateway`).
    var api: GatewayHTTP { GatewayHTTP(url: gateway.url) }

    func http(
        _ method: HTTPMethod, _ path: String, json: Any? = nil, body: [UInt8]? = nil, contentType: String? = nil,
        headers: [(String, String)] = []
    ) async throws -> HTTPResult {
        try await api.http(method, path, json: json, body: body, contentType: contentType, headers: headers)
    }

    func download(_ path: String, to file: String) async throws -> HTTPResult { try await api.download(path, to: file) }

    func submit(_ files: [String: String], nonce: String = "c0ffee00", extra: [String: Any] = [:]) async throws -> String {
        try await api.submit(files, nonce: nonce, extra: extra)
    }

    func status(_ id: String) async throws -> [String: Any] { try await api.status(id) }

    func waitForStatus(_ id: String, _ accept: Set<String>, timeout: Duration = .seconds(600)) async throws -> [String: Any] {
        try await api.waitForStatus(id, accept, timeout: timeout)
    }

    func stop() {
        for w in workers { w.stop() }
        fetch?.stop()
        gateway.stop()
        broker.stop()
    }
}

/// A crate whose build script sleeps, so a build stays in progress for a while.
func slowCrate(seconds: Int, name: String = "slow") -> [String: String] {
    Fixtures.helloCrate(name: name, buildRS: "fn main() { std::thread::sleep(std::time::Duration::from_secs(\(seconds))); }")
}
