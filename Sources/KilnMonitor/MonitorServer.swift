import Foundation
import Hummingbird
import Logging
import ServiceLifecycle

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

    /// The monitor of `process` on 127.0.0.1:`port` (0 picks one), announcing its address on standard
    /// output once bound ("<process> monitor on http://127.0.0.1:<port>", what scripts and tests wait
    /// for); nil when `port` is negative (disabled).
    public static func loopbackService(process: String, port: Int, exporter: PrometheusExporter, logger: Logger) -> (any Service)? {
        guard port >= 0 else { return nil }
        return makeApplication(host: "127.0.0.1", port: port, exporter: exporter, serverName: "\(process)-monitor", logger: logger) {
            FileHandle.standardOutput.write(Data("\(process) monitor on http://127.0.0.1:\($0)\n".utf8))
        }
    }
}
