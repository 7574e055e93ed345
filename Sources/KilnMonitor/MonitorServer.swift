import Hummingbird
import Logging

/// `/healthz` and `/metrics` on a port of their own, for the processes that have no HTTP API of their
/// own to put them on (broker, pool). Scrapers and health checks never touch the bus port.
public enum MonitorServer {
    public static func makeApplication(
        host: String, port: Int, exporter: PrometheusExporter, serverName: String, logger: Logger,
        onServerRunning: @escaping @Sendable (Int) async -> Void = { _ in }
    )
        -> some ApplicationProtocol
    {
        let router = Router()
        router.get("/healthz") { _, _ in "ok\n" }
        router.get("/metrics") { _, _ -> Response in
            Response(
                status: .ok, headers: [.contentType: PrometheusExporter.contentType],
                body: .init(byteBuffer: ByteBuffer(string: exporter.exposition())))
        }
        return Application(
            router: router,
            configuration: .init(address: .hostname(host, port: port), serverName: serverName),
            onServerRunning: { channel in await onServerRunning(channel.localAddress?.port ?? port) },
            logger: logger)
    }
}
