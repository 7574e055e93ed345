import KilnBroker
import KilnBusClient
import KilnMonitor
import Logging
import NIOCore

/// Runs an in-process kiln-broker on 127.0.0.1, port 0, for the duration of `body`.
func withBroker<T: Sendable>(
    _ configure: (inout BrokerServer.Configuration) -> Void = { _ in },
    metrics: PrometheusExporter = PrometheusExporter(),
    _ body: @Sendable (BrokerServer, Int) async throws -> T
) async throws -> T {
    var configuration = BrokerServer.Configuration(host: "127.0.0.1", port: 0)
    configure(&configuration)
    var logger = Logger(label: "test.broker")
    logger.logLevel = .warning
    let broker = BrokerServer(configuration: configuration, metrics: BrokerMetrics(factory: metrics.factory), logger: logger)
    return try await withThrowingTaskGroup(of: T?.self) { group in
        group.addTask {
            try await broker.run()
            return nil
        }
        let port = try await broker.port
        let result = try await body(broker, port)
        group.cancelAll()
        return result
    }
}

func client(_ port: Int, _ configure: (inout BusClient.Configuration) -> Void = { _ in }) async throws -> BusClient {
    var c = BusClient.Configuration(host: "127.0.0.1", port: port)
    configure(&c)
    var logger = Logger(label: "test.client")
    logger.logLevel = .error
    return try await BusClient.connect(c, logger: logger)
}

/// Collects up to `count` messages from a subscription, or whatever arrived within `timeout`.
/// (On timeout the iteration is cancelled, which ends the subscription.)
func collect(_ sub: BusSubscription, count: Int, timeout: Duration = .seconds(5)) async -> [BusMessage] {
    let task = Task {
        var out: [BusMessage] = []
        for await m in sub {
            out.append(m)
            if out.count == count { break }
        }
        return out
    }
    let timer = Task {
        try? await Task.sleep(for: timeout)
        task.cancel()
    }
    let result = await task.value
    timer.cancel()
    return result
}
