import ArgumentParser
import Foundation
import KilnBusClient
import KilnCore
import KilnFetch
import KilnMonitor
import Logging
import ServiceLifecycle

@main
struct KilnFetchCommand: AsyncParsableCommand {
    static let configuration = CommandConfiguration(
        commandName: "kiln-fetch",
        abstract: "The farm's fetch service: workers get crates and git commits over the bus from here, never from a network.",
        discussion: """
            Workers ask on kiln.worker.<id>.fetch.<kind> and check every byte they get against the digest their lock file or \
            request pins. Crates are kept in a content-addressed cache that survives restarts; each worker's requests are \
            charged to its own account (objects, bytes, time) and only crates its filed lock plan names are served \
            (docs/fetch-service.md).
            """,
        version: KilnVersion.current.description)

    @Option(help: "Broker URL (env KILN_BROKER_URL).") var broker: String?
    @Option(help: "Broker token (env KILN_BROKER_TOKEN).") var brokerToken: String?
    @Option(help: "Sparse-HTTP Cargo index crates are downloaded from (crates.io's, or a mirror).") var cargoRegistry = "https://index.crates.io/"
    @Option(help: "State directory: the crate cache (kept across restarts) and the git work area.") var state = ".state/fetch"
    @Option(help: "Largest size of the crate cache in MiB (least recently used evicted first).") var cacheMb: Int64 = 4096
    @Option(
        help:
            "Allow repositories on this host (host or host:port) even if it resolves to a loopback, private, link-local or multicast address. Repeatable; also KILN_ALLOW_SOURCE_HOSTS (comma-separated)."
    ) var allowSourceHost: [String] = []
    @Flag(help: "Fetch repositories only from the --allow-source-host hosts; refuse every other host without looking it up.") var onlyAllowedSourceHosts = false
    @Option(help: "Largest size of the compiled-dependency cache in MiB (0 keeps none; least recently used evicted first).")
    var dependencyCacheMb: Int64 = 16384
    @Option(help: "Largest compiled-dependency entry one worker may store, in MiB.") var maxDependencyEntryMb: Int64 = 2048
    @Option(help: "Compiled-dependency uploads taken at once.") var maxDependencyUploads = 4
    @Option(help: "Seconds one git fetch may take.") var gitTimeout = 600
    @Option(help: "Largest pack of one commit's tree, in MiB.") var maxPackMb: Int64 = 2048
    @Option(help: "Most crates one job's lock may name.") var maxCratesPerJob = 4000
    @Option(help: "Most bytes served to one job, in MiB.") var maxMbPerJob: Int64 = 4096
    @Option(help: "Seconds a worker may fetch for after its first request.") var jobWindow = 3600
    @Option(help: "Bytes per reply chunk (at most the broker's frame size less 64 KiB).") var chunkBytes = 512 << 10
    @Flag(help: "Serve requests without a broker-stamped sender: only for a broker that does not authenticate users (development).")
    var allowUnstamped = false
    @Option(help: "Monitor port for /healthz and /metrics on 127.0.0.1 (0 picks one and prints it; -1 disables).") var monitorPort = -1
    @Option(help: "Log level.") var logLevel = "info"

    func run() async throws {
        KilnLogging.bootstrap(level: logLevel)
        let exporter = PrometheusExporter()
        exporter.bootstrap()
        let env = ProcessInfo.processInfo.environment
        let bus = try BusClient.Configuration.fromCommandLine(url: broker ?? env["KILN_BROKER_URL"], token: brokerToken, name: "kiln-fetch")
        guard dependencyCacheMb >= 0, maxDependencyEntryMb > 0, maxDependencyUploads > 0 else {
            throw ValidationError("--dependency-cache-mb must be 0 or more; --max-dependency-entry-mb and --max-dependency-uploads positive")
        }
        guard cacheMb > 0, maxPackMb > 0, maxMbPerJob > 0, maxCratesPerJob > 0, jobWindow > 0, gitTimeout > 0 else {
            throw ValidationError("sizes, counts and times must be positive")
        }
        guard chunkBytes >= 4096, chunkBytes <= 8 << 20 else { throw ValidationError("--chunk-bytes must be 4 KiB to 8 MiB") }
        var cfg = FetchService.Configuration(
            bus: bus, cache: .init(directory: state + "/crates", maxBytes: cacheMb << 20), workDirectory: state + "/work")
        cfg.cargoRegistry = cargoRegistry
        let fromEnvironment = (env["KILN_ALLOW_SOURCE_HOSTS"] ?? "").split(separator: ",").map { $0.trimmingCharacters(in: .whitespaces) }.filter { !$0.isEmpty }
        cfg.sourceHosts = SourceHostPolicy(allowed: allowSourceHost + fromEnvironment, onlyAllowed: onlyAllowedSourceHosts)
        cfg.gitTimeout = .seconds(gitTimeout)
        cfg.maxPackBytes = maxPackMb << 20
        cfg.quota.maxCrates = maxCratesPerJob
        cfg.quota.maxBytes = maxMbPerJob << 20
        cfg.quota.window = .seconds(jobWindow)
        cfg.chunkBytes = chunkBytes
        cfg.allowUnstampedRequests = allowUnstamped
        if dependencyCacheMb > 0 {
            var dependencies = DependencyCacheStore.Configuration(directory: state + "/dependencies")
            dependencies.maxBytes = dependencyCacheMb << 20
            dependencies.maxEntryBytes = maxDependencyEntryMb << 20
            dependencies.maxUploads = maxDependencyUploads
            cfg.dependencyCache = dependencies
        }
        // Leftover work from a previous run (packs nobody finished fetching) is not worth keeping.
        try? FileManager.default.removeItem(atPath: cfg.workDirectory)
        let logger = Logger(label: "kiln.fetch")
        let service = try FetchService(configuration: cfg, logger: logger)
        var services: [any Service] = [service]
        if let monitor = MonitorServer.loopbackService(process: "kiln-fetch", port: monitorPort, exporter: exporter, logger: logger) {
            services.insert(monitor, at: 0)
        }
        try await ServiceGroup(configuration: .init(services: services, gracefulShutdownSignals: [.sigterm, .sigint], logger: logger)).run()
    }
}
