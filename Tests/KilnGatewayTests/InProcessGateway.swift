import Foundation
import HTTPTypes
import Hummingbird
import HummingbirdTesting
import KilnBroker
import KilnBusClient
import KilnGateway
import KilnTestSupport
import Logging
import Metrics
import NIOCore

/// A gateway assembled in this process over an in-process broker, driven through HummingbirdTesting's
/// router mode: no sockets, no processes, no dispatch (the coordinator does not run). For what the
/// HTTP layer alone decides — validation, authentication, routing; what crosses processes stays in
/// the end-to-end suites.
struct InProcessGateway {
    let gateway: Gateway
    let dataDirectory: TemporaryDirectory

    /// Runs `body` with a test client for a fresh gateway `configure` may adjust.
    static func test<T: Sendable>(
        _ configure: (inout GatewayConfiguration) throws -> Void = { _ in },
        _ body: @Sendable (any TestClientProtocol, Gateway) async throws -> T
    ) async throws -> T {
        var logger = Logger(label: "test.gateway")
        logger.logLevel = .warning
        let broker = BrokerServer(configuration: .init(host: "127.0.0.1", port: 0), logger: logger)
        return try await withThrowingTaskGroup(of: T?.self) { group in
            group.addTask {
                try await broker.run()
                return nil
            }
            defer { group.cancelAll() }
            let dir = try TemporaryDirectory(prefix: "kiln-gw-inproc")
            var configuration = GatewayConfiguration(dataDirectory: dir.file("gw"), bus: .init(host: "127.0.0.1", port: try await broker.port))
            try configure(&configuration)
            let gateway = try await Gateway.make(configuration: configuration, logger: logger, metricsExposition: { "" })
            do {
                let result = try await gateway.application.test(.router) { client in try await body(client, gateway) }
                await gateway.bus.close()
                return withExtendedLifetime(dir) { result }
            } catch {
                await gateway.bus.close()
                throw error
            }
        }
    }
}

extension TestClientProtocol {
    /// POST /build with a JSON object body.
    func submit(json: [String: Any], headers: HTTPFields = [:]) async throws -> TestResponse {
        var fields = headers
        fields[.contentType] = "application/json"
        return try await execute(
            uri: "/build", method: .post, headers: fields, body: ByteBuffer(bytes: try JSONSerialization.data(withJSONObject: json)))
    }
}

extension TestResponse {
    var text: String { String(buffer: body) }
}
