import Foundation
import Hummingbird
import HummingbirdCore
import HummingbirdTLS
import KilnAttestation
import KilnBusClient
import KilnCoordination
import KilnJobStore
import KilnJobs
import Logging
import ServiceLifecycle

/// Assembles the gateway: store, result files, bus client, coordinator and HTTP application, as
/// services for one `ServiceGroup` (SIGTERM stops HTTP first, then the coordinator).
public struct Gateway: Sendable {
    public let configuration: GatewayConfiguration
    public let store: any JobStore
    public let coordinator: BuildCoordinator
    /// The HTTP application (also one of `services`): tests drive it in-process with HummingbirdTesting.
    public let application: Application<RouterResponder<GatewayRequestContext>>
    /// The gateway's bus connection (drained by the coordinator's service at shutdown).
    public let bus: BusClient
    public let services: [any Service]

    public static func make(
        configuration: GatewayConfiguration, logger: Logger,
        metrics: GatewayMetrics = GatewayMetrics(), metricsExposition: @escaping @Sendable () -> String,
        onListening: @escaping @Sendable (Int) async -> Void = { _ in }
    ) async throws -> Gateway {
        try FileManager.default.createDirectory(atPath: configuration.dataDirectory, withIntermediateDirectories: true)
        let store: any JobStore
        var storeServices: [any Service] = []
        if let database = configuration.database {
            let postgres = try await PostgresJobStore.connect(url: database, operationTimeout: configuration.databaseTimeout, logger: logger)
            store = postgres
            storeServices.append(postgres)
        } else {
            store = try SQLiteJobStore(path: configuration.dataDirectory + "/kiln.sqlite")
        }
        let files = try ResultFiles(root: configuration.dataDirectory)
        var keys: [PublicKey] = []
        for path in configuration.keyFiles {
            do { keys.append(try PublicKey(contentsOf: path)) } catch {
                throw KeyError("cannot load public key \(path): \(error)")
            }
        }
        let client = try await BusClient.connect(configuration.bus, logger: logger)
        let configuration = configuration.fitted(toBrokerFrame: client.maxFrame, logger: logger)
        let hub = EventHub()
        let coordinator = BuildCoordinator(
            store: store, files: files, hub: hub, client: client,
            configuration: configuration.coordination, metrics: metrics, logger: logger)
        let router = Router(context: GatewayRequestContext.self)
        router.middlewares.add(LogRequestsMiddleware(.debug))
        let routeTable = UnmatchedRouteMiddleware.Table()
        router.middlewares.add(UnmatchedRouteMiddleware(table: routeTable))
        let endpoints = GatewayRoutes(
            coordinator: coordinator, hub: hub, store: store, files: files, configuration: configuration, metrics: metrics,
            metricsExposition: metricsExposition, keys: KeySet(keys), limiter: RequestLimiter(configuration: configuration.requestLimits, metrics: metrics)
        ).register(on: router)
        routeTable.set(endpoints)
        for endpoint in endpoints { logger.debug("serves \(endpoint)") }
        var server = HTTPServerBuilder.http1(configuration: .init(additionalChannelHandlers: [SSERelay()]))
        if let tls = configuration.tls { server = try .tls(server, tlsConfiguration: try tls.makeConfiguration()) }
        let app = Application(
            router: router,
            server: server,
            configuration: .init(address: .hostname(configuration.host, port: configuration.port), serverName: "kiln-gateway"),
            onServerRunning: { channel in await onListening(channel.localAddress?.port ?? configuration.port) },
            logger: logger)
        let coordinatorService = CoordinatorService(coordinator: coordinator, hub: hub, client: client, keepalive: configuration.sseKeepalive)
        let housekeeping = GatewayHousekeeping(coordinator: coordinator, store: store, files: files, logger: logger)
        return Gateway(
            configuration: configuration, store: store, coordinator: coordinator, application: app, bus: client,
            services: storeServices + [coordinatorService, housekeeping, app])
    }
}

/// Runs the coordinator until shutdown, then drains the bus connection.
struct CoordinatorService: Service {
    let coordinator: BuildCoordinator
    let hub: EventHub
    let client: BusClient
    let keepalive: Duration

    func run() async throws {
        // A graceful shutdown ends it with CancellationError; any other error is the coordinator
        // failing and must reach the ServiceGroup (the process exits non-zero), not vanish.
        do {
            try await cancelWhenGracefulShutdown {
                try await withThrowingTaskGroup(of: Void.self) { group in
                    group.addTask { try await coordinator.run() }
                    group.addTask { await hub.runKeepalive(interval: keepalive) }
                    try await group.next()
                    group.cancelAll()
                }
            }
        } catch is CancellationError {}
        await client.drain()
    }
}
