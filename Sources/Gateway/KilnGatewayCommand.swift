import ArgumentParser
import Foundation
import KilnBusClient
import KilnCoordination
import KilnCore
import KilnGateway
import KilnMessages
import KilnMonitor
import Logging
import ServiceLifecycle

@main
struct KilnGatewayCommand: AsyncParsableCommand {
    static let configuration = CommandConfiguration(
        commandName: "kiln-gateway",
        abstract: "Kiln's HTTP API: takes builds, dispatches each to one worker over the bus, stores events and results, relays SSE.",
        discussion: "Prints 'kiln-gateway listening on http://HOST:PORT' once ready (useful with --port 0).",
        version: KilnVersion.current.description)

    @Option(help: "Address to listen on.") var host = "127.0.0.1"
    @Option(help: "Port (0 picks a free one).") var port = 8080
    @Option(help: "Data directory: SQLite, results, uploads.") var data = ".state/gateway"
    @Option(help: "Keep jobs and events in PostgreSQL instead of SQLite: postgres://user[:password]@host[:port]/database (env KILN_DATABASE).")
    var database: String?
    @Option(help: "Broker URL, kiln://[user:password@]host:port (env KILN_BROKER_URL).") var broker: String?
    @Option(help: "Broker token (env KILN_BROKER_TOKEN).") var brokerToken: String?
    @Option(help: "Bearer token: name:role:token (role user or admin), or a bare admin token; repeatable (env KILN_TOKENS, comma-separated).") var token: [String] = []
    @Option(help: "Tokens file: JSON principals with token_sha256 (re-read when it changes, so revocation takes effect at once).") var tokensFile: String?
    @Flag(help: "Allow listening on a non-loopback address without any token (everyone is admin).") var insecureNoAuth = false
    @Option(help: "Most open event streams in total.") var maxEventStreams = 10_000
    @Option(help: "Most open event streams per caller (principal).") var maxEventStreamsPerCaller = 100
    @Option(help: "Most request bodies (uploads) received at once, in total.") var maxUploads = 64
    @Option(help: "Most request bodies (uploads) received at once per caller.") var maxUploadsPerCaller = 8
    @Option(help: "Builds a caller may submit per minute (bursts up to the same number).") var submissionsPerMinute = 120
    @Option(help: "Serve HTTPS with this PEM certificate chain (with --tls-key).") var tlsCert: String?
    @Option(help: "The PEM private key of --tls-cert.") var tlsKey: String?
    @Option(help: "Public key file served at /keys; repeatable.") var publicKey: [String] = []
    @Option(help: "Largest request body in bytes (default 256 MiB).") var maxBody = 256 << 20
    @Option(help: "Days a result is kept.") var retentionDays: Double = 7
    @Option(help: "Seconds a dispatched worker has to accept.") var ackTimeout: Double = 5
    @Option(help: "Events held per job while its dispatch is settled (a worker's first events can overtake its acceptance); more are dropped and replayed.")
    var maxHeldEvents = 256
    @Option(help: "Seconds of worker silence before its job fails (3 heartbeats).") var workerSilence: Double = 15
    @Option(help: "Seconds without a heartbeat in the job store after which another gateway adopts this one's building jobs (several gateways on one PostgreSQL).")
    var gatewayLease: Double = 5
    @Option(help: "Seconds a PostgreSQL operation may take before it fails and the gateway reconnects (with --database postgres://…).")
    var databaseTimeout: Double = 10
    @Option(help: "This gateway's name among several on one job store (default: random per start).") var instanceId: String?
    @Option(help: "Seconds between SSE keepalive comments.") var sseKeepalive: Double = 15
    @Option(help: "Events buffered per SSE client before it is disconnected.") var sseBacklog = 4096
    @Option(help: "Uploaded sources up to this many bytes travel inside the dispatch request; larger ones are fetched by the worker in chunks.")
    var inlineSourceLimit = 2 << 20
    @Option(help: "Chunk size in bytes for sources fetched by workers.") var sourceChunkSize = 1 << 20
    @Option(help: "Largest result tarball a worker may upload, in MiB.") var maxResultMb: Int64 = 16 << 10
    @Option(help: "Most vCPUs a build may ask for in build_config.") var maxBuildVcpus = 64
    @Option(help: "Most memory in MiB a build may ask for in build_config.") var maxBuildMemoryMib = 64 << 10
    @Option(help: "Most disk in MB a build may ask for in build_config.") var maxBuildDiskMb = 200 << 10
    @Option(help: "Longest timeout_s a build may ask for in build_config.") var maxBuildTimeout = 6 * 3600
    @Flag(help: "Let builds ask for network (build_config.internet_access); they are then not hermetic. Workers must allow it too.")
    var allowInternetBuilds = false
    @Option(help: "Attempts per job: a failure that is not the build's fault (worker lost, retryable fetch) runs it again, up to this many times.")
    var maxAttempts = 2
    @Option(help: "Log level.") var logLevel = "info"

    func run() async throws {
        KilnLogging.bootstrap(level: logLevel)
        let exporter = PrometheusExporter(timerBuckets: GatewayMetrics.timerBuckets)
        exporter.bootstrap()
        let env = ProcessInfo.processInfo.environment
        let bus = try BusClient.Configuration.fromCommandLine(url: broker, token: brokerToken, name: "kiln-gateway")
        var cfg = GatewayConfiguration(dataDirectory: data, bus: bus)
        cfg.database = database ?? env["KILN_DATABASE"]
        cfg.host = host
        cfg.port = port
        let principals = try PrincipalDirectory(tokens: token + (env["KILN_TOKENS"]?.split(separator: ",").map(String.init) ?? []), file: tokensFile)
        cfg.principals = principals
        if principals.isOpen {
            let loopback = host == "localhost" || host.hasPrefix("127.") || host == "::1"
            guard loopback || insecureNoAuth else {
                throw ValidationError(
                    "no tokens are configured: refusing to listen on \(host) where anyone could use the farm as admin; give --token/--tokens-file, listen on 127.0.0.1, or pass --insecure-no-auth"
                )
            }
            FileHandle.standardError.write(
                Data("kiln-gateway: no tokens configured: every caller is admin\(loopback ? " (listening on loopback only)" : " (--insecure-no-auth on \(host))")\n".utf8)
            )
        }
        switch (tlsCert, tlsKey) {
        case (let cert?, let key?): cfg.tls = GatewayTLS(certificateFile: cert, keyFile: key)
        case (nil, nil): break
        default: throw ValidationError("--tls-cert and --tls-key go together")
        }
        cfg.keyFiles = publicKey
        cfg.maxBodyBytes = maxBody
        cfg.retention = .seconds(retentionDays * 86400)
        cfg.ackTimeout = .seconds(ackTimeout)
        guard (1...100_000).contains(maxHeldEvents) else { throw ValidationError("--max-held-events must be 1 to 100000") }
        cfg.maxHeldEvents = maxHeldEvents
        cfg.workerSilenceLimit = .seconds(workerSilence)
        guard gatewayLease >= 2, gatewayLease <= 3600 else { throw ValidationError("--gateway-lease must be 2 to 3600 seconds (heartbeats are 1 s apart)") }
        cfg.gatewayLease = .seconds(gatewayLease)
        guard databaseTimeout >= 1, databaseTimeout <= 600 else { throw ValidationError("--database-timeout must be 1 to 600 seconds") }
        cfg.databaseTimeout = .seconds(databaseTimeout)
        if let instanceId {
            guard Subjects.isValidToken(instanceId) else { throw ValidationError("--instance-id must be 1 to 128 of A-Z a-z 0-9 _ -") }
            cfg.instanceID = instanceId
        }
        cfg.sseKeepalive = .seconds(sseKeepalive)
        cfg.sseBacklog = sseBacklog
        cfg.inlineSourceLimit = inlineSourceLimit
        cfg.sourceChunkSize = sourceChunkSize
        guard maxEventStreams > 0, maxEventStreamsPerCaller > 0, submissionsPerMinute > 0, maxUploads > 0, maxUploadsPerCaller > 0 else {
            throw ValidationError(
                "--max-event-streams, --max-event-streams-per-caller, --max-uploads, --max-uploads-per-caller and --submissions-per-minute must be positive")
        }
        guard maxBody > 0 else { throw ValidationError("--max-body must be positive") }
        cfg.requestLimits.maxUploads = maxUploads
        cfg.requestLimits.maxUploadsPerPrincipal = maxUploadsPerCaller
        cfg.requestLimits.maxSSEStreams = maxEventStreams
        cfg.requestLimits.maxSSEStreamsPerPrincipal = maxEventStreamsPerCaller
        cfg.requestLimits.submissionsPerMinute = submissionsPerMinute
        guard maxResultMb > 0, maxResultMb <= 1 << 30 else { throw ValidationError("--max-result-mb must be positive") }
        cfg.maxResultBytes = maxResultMb << 20
        guard maxBuildVcpus > 0, maxBuildMemoryMib > 0, maxBuildDiskMb > 0, maxBuildTimeout > 0 else {
            throw ValidationError("--max-build-vcpus, --max-build-memory-mib, --max-build-disk-mb and --max-build-timeout must be positive")
        }
        guard (1...10).contains(maxAttempts) else { throw ValidationError("--max-attempts must be 1 to 10") }
        cfg.maxAttempts = maxAttempts
        cfg.buildMaxima.vcpus = maxBuildVcpus
        cfg.buildMaxima.memoryMiB = maxBuildMemoryMib
        cfg.buildMaxima.diskMB = maxBuildDiskMb
        cfg.buildMaxima.timeoutSeconds = maxBuildTimeout
        cfg.buildMaxima.internetAccess = allowInternetBuilds
        let logger = Logger(label: "kiln.gateway")
        let host = self.host
        let scheme = cfg.tls == nil ? "http" : "https"
        let gateway = try await Gateway.make(configuration: cfg, logger: logger, metricsExposition: exporter.exposition) { port in
            FileHandle.standardOutput.write(Data("kiln-gateway listening on \(scheme)://\(host):\(port)\n".utf8))
        }
        let group = ServiceGroup(
            configuration: .init(
                services: gateway.services, gracefulShutdownSignals: [.sigterm, .sigint],
                logger: logger))
        try await group.run()
    }
}
