import ArgumentParser
import Crypto
import Foundation
import KilnAttestation
import KilnBusClient
import KilnCore
import KilnMonitor
import KilnPool
import Logging
import ServiceLifecycle

@main
struct KilnPoolCommand: AsyncParsableCommand {
    static let configuration = CommandConfiguration(
        commandName: "kiln-pool",
        abstract: "Keeps N fresh one-shot workers waiting; starts a new one for every worker that takes a build.",
        discussion: """
            The launch template runs under /bin/sh -c with {id}, {broker} and {scratch} substituted. The default starts a \
            local kiln-worker process; cluster/vm/launch-vm.sh starts a fresh (confidential) VM per worker instead (docs/vm-workers.md).
            """,
        version: KilnVersion.current.description)

    @Option(help: "Broker URL (env KILN_BROKER_URL).") var broker: String?
    @Option(help: "Broker token (env KILN_BROKER_TOKEN).") var brokerToken: String?
    @Option(help: "Idle workers to keep.") var idle = 2
    @Option(help: "Most workers at once (idle + busy).") var max = 8
    @Option(help: "State directory (worker logs and scratch).") var state = ".state/pool"
    @Option(help: "Signing key the default template passes to workers.") var key = ".state/keys/farm.pem"
    @Option(help: "Launch command template.") var launch: String?
    @Option(help: "Extra arguments the default template passes to kiln-worker.") var workerArgs = ""
    @Option(help: "Monitor port for /healthz and /metrics on 127.0.0.1 (0 picks one and prints it; -1 disables).") var monitorPort = -1
    @Option(help: "Operator's credential signing key (Ed25519 private key, `kiln keys generate`): each worker gets its own short-lived broker credential signed with it.")
    var credentialSigningKey: String?
    @Option(help: "Seconds a worker credential is valid (default 7200; at least the longest build).") var credentialTtl = 7200
    @Option(
        help: "The farm's signing key (PEM): certify the in-memory key of each worker this pool launches (kiln-worker --certified-key); needs --credential-signing-key.")
    var farmKey: String?
    @Option(help: "The VM image's image.json (cluster/vm/build-image.sh): its parts are named in every certificate and in the provenance of builds signed under it.")
    var vmImage: String?
    @Option(help: "Seconds a worker certificate is valid (60 to 86400; boot, one build and its delivery).") var certificateLifetime = 3 * 3600
    @Option(help: "Seconds a launched worker has to announce itself (a VM's boot) before it is killed and replaced.") var bootTimeout = 300
    @Option(help: "Log level.") var logLevel = "info"

    func run() async throws {
        KilnLogging.bootstrap(level: logLevel)
        let exporter = PrometheusExporter()
        exporter.bootstrap()
        let env = ProcessInfo.processInfo.environment
        let brokerURL = broker ?? env["KILN_BROKER_URL"] ?? "kiln://127.0.0.1:4222"
        let bus = try BusClient.Configuration.fromCommandLine(url: brokerURL, token: brokerToken, name: "kiln-pool")
        let workerBinary = URL(fileURLWithPath: CommandLine.arguments[0]).resolvingSymlinksInPath().deletingLastPathComponent()
            .appendingPathComponent("kiln-worker").path
        let template = launch ?? "\(workerBinary) --broker {broker} --worker-id {id} --scratch {scratch} --key \(key) \(workerArgs)"
        guard idle >= 0, max >= 1 else { throw ValidationError("--idle must be ≥ 0 and --max ≥ 1") }
        var cfg = WorkerPool.Configuration(launchTemplate: template, broker: brokerURL, stateDirectory: state)
        if let credentialSigningKey {
            guard credentialTtl > 0 else { throw ValidationError("--credential-ttl must be positive") }
            cfg.credentialKey = try Curve25519.Signing.PrivateKey(rawRepresentation: SigningKey(contentsOf: credentialSigningKey).seed)
            cfg.credentialLifetime = .seconds(credentialTtl)
        }
        if let farmKey {
            guard cfg.credentialKey != nil else {
                throw ValidationError("--farm-key needs --credential-signing-key: a certification request is tied to the worker by its own bus credential")
            }
            guard certificateLifetime >= 60, certificateLifetime <= 86400 else { throw ValidationError("--certificate-lifetime must be 60 to 86400 seconds") }
            // On nats-server nothing stamps the sender: the subject is the proof, because the pool mints
            // each worker a user that alone may publish on its certify subject (`kiln keys nats`).
            cfg.certifier = .init(
                farmKey: try SigningKey(contentsOf: farmKey), image: try vmImage.map(WorkerCertifier.image(manifest:)) ?? [],
                lifetime: .seconds(certificateLifetime), senderProof: bus.wireProtocol == .nats ? .subjectOnNATSWithKilnAccounts : .brokerStamp)
        } else if vmImage != nil {
            throw ValidationError("--vm-image is named in worker certificates: it needs --farm-key")
        }
        guard bootTimeout >= 1, bootTimeout <= 86400 else { throw ValidationError("--boot-timeout must be 1 to 86400 seconds") }
        cfg.bootTimeout = .seconds(bootTimeout)
        cfg.idleTarget = idle
        cfg.maxWorkers = max
        let logger = Logger(label: "kiln.pool")
        let pool = WorkerPool(configuration: cfg, bus: bus, logger: logger)
        var services: [any Service] = [pool]
        if let monitor = MonitorServer.loopbackService(process: "kiln-pool", port: monitorPort, exporter: exporter, logger: logger) {
            services.insert(monitor, at: 0)
        }
        try await ServiceGroup(configuration: .init(services: services, gracefulShutdownSignals: [.sigterm, .sigint], logger: logger)).run()
    }
}
