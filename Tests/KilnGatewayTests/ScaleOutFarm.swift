import Foundation
import KilnBusClient
import KilnStandInWorker
import KilnTestSupport
import Logging
import Synchronization

/// The scaled-out farm of #15 as real processes on loopback: three clustered nats-servers, one
/// PostgreSQL, two gateways sharing it and one data directory (gateway A prefers bus member 0,
/// gateway B member 1), and workers on demand — real `kiln-worker`s or in-process stand-ins.
final class ScaleOutFarm: @unchecked Sendable {
    let dir: TemporaryDirectory
    let nats: [NATSServerProcess]
    let database: PostgresProcess
    let keyFile: String
    /// A and B; an entry is replaced by `restartGateway`.
    private(set) var gateways: [GatewayProcess] = []
    private var workers: [LaunchedProcess] = []
    /// The farm's fetch service, started with the first worker.
    private var fetch: FetchServiceProcess?
    private let gatewayArguments: [String]

    /// `--broker` for a process that prefers member `first` and fails over to the others.
    func busURL(preferring first: Int) -> String {
        (nats.indices.map { (first + $0) % nats.count }).map { nats[$0].url }.joined(separator: ",")
    }

    init(gatewayLease: Int = 3, gatewayArguments: [String] = []) async throws {
        dir = try TemporaryDirectory(prefix: "kiln-scale")
        let first = try await NATSServerProcess(cluster: "kiln")
        let second = try await NATSServerProcess(cluster: "kiln", routes: [first.routePort!])
        let third = try await NATSServerProcess(cluster: "kiln", routes: [first.routePort!, second.routePort!])
        nats = [first, second, third]
        // The cluster is formed when every member has routes to the other two.
        for member in nats {
            let formed = await eventually(within: .seconds(60)) { member.process.output.filter { $0.contains("Route connection created") }.count >= 2 }
            guard formed else { throw LaunchError("nats cluster did not form: \(member.process.output.suffix(5))") }
        }
        database = try await PostgresProcess()
        keyFile = dir.file("farm.pem")
        _ = try await LaunchedProcess(BuiltProducts.path("kiln"), ["keys", "generate", keyFile]).waitForExit()
        self.gatewayArguments = ["--log-level", "info", "--gateway-lease", String(gatewayLease), "--submissions-per-minute", "100000"] + gatewayArguments
        for member in 0..<2 { gateways.append(try await startGateway(preferring: member)) }
    }

    var a: GatewayHTTP { GatewayHTTP(url: gateways[0].url) }
    var b: GatewayHTTP { GatewayHTTP(url: gateways[1].url) }

    private func startGateway(preferring member: Int, port: Int = 0) async throws -> GatewayProcess {
        try await GatewayProcess(
            brokerPort: 0, dataDirectory: dir.file("shared"), port: port,
            arguments: ["--broker", busURL(preferring: member), "--database", database.url, "--public-key", keyFile, "--instance-id", instanceID(member)]
                + gatewayArguments)
    }

    /// Gateway `index`'s `--instance-id`: what it stamps on the notices it publishes.
    func instanceID(_ index: Int) -> String { "gw\(index)" }

    /// Gateway `index` killed (SIGKILL: no graceful hand-over).
    func killGateway(_ index: Int) {
        gateways[index].stop()
    }

    /// Which gateway's log says it dispatched `job` (the one ingesting it).
    func dispatcher(of job: String) -> Int? {
        gateways.indices.first { i in gateways[i].process.output.contains { $0.contains("job dispatched") && $0.contains(job) } }
    }

    /// A slow build submitted through A and under way on a worker: its id, the index of the gateway
    /// ingesting it, that gateway and the other one.
    func startSlowBuild(seconds: Int, nonce: String) async throws -> (id: String, ingesting: Int, owner: GatewayHTTP, other: GatewayHTTP) {
        let id = try await a.submit(slowCrate(seconds: seconds), nonce: nonce)
        try await startWorker(preferring: 2)
        guard let ingesting = await eventually(within: .seconds(30), { self.dispatcher(of: id) }) else {
            throw LaunchError("no gateway dispatched \(id) within 30 s:\n\(logs(about: id))")
        }
        return ingesting == 0 ? (id, 0, a, b) : (id, 1, b, a)
    }

    /// What the gateways and workers logged about `job`, and their warnings: for failure messages.
    func logs(about job: String) -> String {
        let named = gateways.map { ("gateway \($0.port)", $0.process) } + workers.map { ("worker", $0) }
        return named.flatMap { name, process in
            process.output.filter { !$0.contains("[Hummingbird]") && ($0.contains(job) || $0.contains("warning") || $0.contains("error")) }.suffix(60).map {
                "\(name): \($0)"
            }
        }.joined(separator: "\n")
    }

    @discardableResult
    func startWorker(preferring member: Int = 0) async throws -> LaunchedProcess {
        if fetch == nil { fetch = try await FetchServiceProcess(broker: busURL(preferring: member), state: dir.file("fetch")) }
        let id = "w" + UUID().uuidString.prefix(8).lowercased()
        let w = try await LaunchedProcess(
            BuiltProducts.path("kiln-worker"),
            [
                "--broker", busURL(preferring: member), "--worker-id", id, "--scratch", dir.file("scratch-\(id)"),
                "--key", keyFile, "--idle-timeout", "300",
            ])
        workers.append(w)
        try await w.waitUntilWorkerReady()
        return w
    }

    /// `count` stand-in workers spread over the bus members, each taking jobs until cancelled; every
    /// accepted job id is recorded in `accepted` (a job accepted twice appears twice).
    func runStandIns(_ count: Int, accepted: Recorded<String>) async throws -> Task<Void, any Error> {
        var clients: [BusClient] = []
        for i in 0..<count {
            var configuration = try BusClient.Configuration(url: busURL(preferring: i % nats.count))
            configuration.name = "stand-in-\(i)"
            configuration.inboxNamespace = "standin\(i)"  // the gateway answers a worker on its own inbox only
            clients.append(try await BusClient.connect(configuration, logger: Logger(label: "stand-in")))
        }
        let owned = clients
        return Task {
            defer { Task { for client in owned { await client.close() } } }
            try await withThrowingTaskGroup(of: Void.self) { group in
                for (i, client) in owned.enumerated() {
                    group.addTask {
                        let worker = StandInWorker(client: client, configuration: .init(workerID: "standin\(i)"))
                        try await worker.run { id in accepted.append(id) }
                    }
                }
                try await group.waitForAll()
            }
        }
    }

    /// Stops every process at once (synchronously: a `defer` in a test runs it before the test ends).
    func stop() {
        for w in workers { w.stop() }
        fetch?.stop()
        for g in gateways { g.stop() }
        for n in nats { n.stop() }
        database.stop()
    }
}

extension Array where Element == SSEEvent {
    /// Event ids 1, 2, 3 … with none missing or repeated, the last one terminal.
    var isCompleteStream: Bool {
        !isEmpty && map(\.id) == (1...count).map { Optional($0) } && ["done", "failed", "cancelled"].contains(last?.event ?? "")
    }
}

/// Values recorded from several tasks (stand-in workers, event callbacks).
final class Recorded<Value: Sendable>: Sendable {
    private let values = Mutex<[Value]>([])
    func append(_ value: Value) { values.withLock { $0.append(value) } }
    var all: [Value] { values.withLock { $0 } }
}
