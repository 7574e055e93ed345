import Foundation
import KilnBus
import KilnCore
import Logging
import NIOConcurrencyHelpers
import NIOCore
import NIOPosix
import NIOSSL
import ServiceLifecycle

/// kiln-broker's TCP listener: accepts connections, gives each a `BrokerConnectionHandler`, and on
/// graceful shutdown drains every connection (pending bytes flushed, `err 503`, close).
public final class BrokerServer: Service, Sendable {
    public struct Configuration: Sendable {
        public var host: String
        public var port: Int
        public var maxFrame: Int
        /// Per-connection outbound backlog before the connection is cut off as a slow consumer.
        public var outboundCap: Int
        public var pingInterval: TimeAmount
        public var maxPingsOutstanding: Int
        public var authenticator: Authenticator
        public var serverName: String
        /// How long a graceful shutdown waits for connections to flush and close.
        public var drainTimeout: TimeAmount
        /// Open connections, in total and from one remote address; more are refused with an `err` frame.
        public var maxConnections = 10_000
        public var maxConnectionsPerAddress = 1_000
        /// With auth required: time allowed to send `connect`, and the largest frame accepted before it.
        public var handshakeTimeout: TimeAmount = .seconds(5)
        public var preConnectMaxFrame = 16 * 1024
        /// Live subscriptions one connection may hold.
        public var maxSubscriptionsPerConnection = 10_000
        /// TLS for every connection (`BrokerTLS.makeContext()`); nil serves plain TCP (loopback).
        public var tls: NIOSSLContext?

        public init(
            host: String = "127.0.0.1", port: Int = 4222, maxFrame: Int = BusFrame.defaultMaxFrame,
            outboundCap: Int = 64 * 1024 * 1024, pingInterval: TimeAmount = .seconds(20),
            maxPingsOutstanding: Int = 2, authenticator: Authenticator = Authenticator(.none),
            serverName: String = "kiln-broker", drainTimeout: TimeAmount = .seconds(5)
        ) {
            self.host = host
            self.port = port
            self.maxFrame = maxFrame
            self.outboundCap = outboundCap
            self.pingInterval = pingInterval
            self.maxPingsOutstanding = maxPingsOutstanding
            self.authenticator = authenticator
            self.serverName = serverName
            self.drainTimeout = drainTimeout
        }
    }

    /// State every connection handler shares.
    final class Shared: Sendable {
        let configuration: Configuration
        let connectionConfiguration: ConnectionStateMachine.Configuration
        let router: MessageRouter
        let metrics: BrokerMetrics
        let logger: Logger
        let infoHeader: BusHeader
        private let channels = NIOLockedValueBox<[Int: any Channel]>([:])

        init(configuration: Configuration, router: MessageRouter, metrics: BrokerMetrics, logger: Logger) {
            self.configuration = configuration
            self.connectionConfiguration = .init(
                authenticator: configuration.authenticator,
                pingInterval: configuration.pingInterval,
                maxPingsOutstanding: configuration.maxPingsOutstanding,
                handshakeTimeout: configuration.handshakeTimeout)
            self.router = router
            self.metrics = metrics
            self.logger = logger
            var info = BusHeader(op: .info)
            info.serverID = UUID().uuidString.lowercased()
            info.version = KilnVersion.release
            info.maxFrame = configuration.maxFrame
            info.authRequired = configuration.authenticator.isRequired
            info.proto = 1
            info.name = configuration.serverName
            self.infoHeader = info
        }

        private let admitted = NIOLockedValueBox<(total: Int, perAddress: [String: Int])>((0, [:]))

        /// Counts a new connection in, or says which limit refuses it.
        func admit(address: String) -> BrokerMetrics.Limit? {
            admitted.withLockedValue { a in
                if a.total >= configuration.maxConnections { return .connections }
                if a.perAddress[address, default: 0] >= configuration.maxConnectionsPerAddress { return .connectionsPerAddress }
                a.total += 1
                a.perAddress[address, default: 0] += 1
                return nil
            }
        }

        func release(address: String) {
            admitted.withLockedValue { a in
                a.total -= 1
                let n = a.perAddress[address, default: 1] - 1
                a.perAddress[address] = n > 0 ? n : nil
            }
        }

        func register(id: Int, channel: any Channel) { channels.withLockedValue { $0[id] = channel } }
        func unregister(id: Int) { channels.withLockedValue { $0[id] = nil } }
        var openChannels: [any Channel] { channels.withLockedValue { Array($0.values) } }
    }

    public let configuration: Configuration
    public let metrics: BrokerMetrics
    public let router: MessageRouter
    let shared: Shared
    private let group: any EventLoopGroup
    private let nextID = NIOLockedValueBox(0)
    private let listening = NIOLockedValueBox<(port: Int?, waiters: [CheckedContinuation<Int, any Error>])>((nil, []))
    private let logger: Logger

    public init(
        configuration: Configuration, metrics: BrokerMetrics = BrokerMetrics(), logger: Logger = Logger(label: "kiln.broker"),
        group: any EventLoopGroup = MultiThreadedEventLoopGroup.singleton
    ) {
        self.configuration = configuration
        self.metrics = metrics
        self.router = MessageRouter(maxSubscriptionsPerConnection: configuration.maxSubscriptionsPerConnection, metrics: metrics)
        self.logger = logger
        self.group = group
        self.shared = Shared(configuration: configuration, router: router, metrics: metrics, logger: logger)
        let shared = self.shared
        router.onSlowConsumer = { outbound, id, pending in
            BrokerConnectionHandler.cutOffSlowConsumer(outbound, id: id, pending: pending, shared: shared)
        }
    }

    /// The port actually bound (useful with port 0). Waits until the listener is up.
    public var port: Int {
        get async throws {
            try await withCheckedThrowingContinuation { continuation in
                listening.withLockedValue { state in
                    if let p = state.port { continuation.resume(returning: p) } else { state.waiters.append(continuation) }
                }
            }
        }
    }

    public func run() async throws {
        let shared = self.shared
        let nextID = self.nextID
        let server: any Channel
        do {
            server = try await ServerBootstrap(group: group)
                .serverChannelOption(.socketOption(.so_reuseaddr), value: 1)
                .serverChannelOption(.backlog, value: 1024)
                .childChannelOption(.socketOption(.tcp_nodelay), value: 1)
                .childChannelOption(.writeBufferWaterMark, value: .init(low: 256 * 1024, high: 1024 * 1024))
                .childChannelOption(.maxMessagesPerRead, value: 16)
                .childChannelInitializer { channel in
                    let id = nextID.withLockedValue {
                        $0 += 1
                        return $0
                    }
                    return channel.eventLoop.makeCompletedFuture {
                        if let tls = shared.configuration.tls {
                            try channel.pipeline.syncOperations.addHandler(NIOSSLServerHandler(context: tls))
                        }
                        try channel.pipeline.syncOperations.addHandler(BrokerConnectionHandler(id: id, shared: shared))
                    }
                }
                .bind(host: configuration.host, port: configuration.port).get()
        } catch {
            let waiters = listening.withLockedValue { s in
                defer { s.waiters = [] }
                return s.waiters
            }
            for w in waiters { w.resume(throwing: error) }
            throw error
        }
        let port = server.localAddress?.port ?? configuration.port
        let waiters = listening.withLockedValue { s in
            s.port = port
            defer { s.waiters = [] }
            return s.waiters
        }
        for w in waiters { w.resume(returning: port) }
        logger.info("listening", metadata: ["host": "\(configuration.host)", "port": "\(port)"])

        // Park until shutdown: graceful (SIGTERM via ServiceGroup) or cancellation.
        await withTaskCancellationHandler {
            await withGracefulShutdownHandler {
                // Waiting for the close only; how it closed does not matter here.
                try? await server.closeFuture.get()
            } onGracefulShutdown: {
                server.close(promise: nil)
            }
        } onCancel: {
            server.close(promise: nil)
        }
        // Already closed is the state wanted.
        try? await server.close()
        await drain()
    }

    /// Flushes and closes every open connection, waiting up to `drainTimeout`.
    func drain() async {
        let channels = shared.openChannels
        guard !channels.isEmpty else { return }
        logger.info("draining connections", metadata: ["count": "\(channels.count)"])
        for channel in channels {
            channel.eventLoop.execute {
                if let handler = try? channel.pipeline.syncOperations.handler(type: BrokerConnectionHandler.self) {
                    handler.drain()
                } else {
                    channel.close(promise: nil)
                }
            }
        }
        let deadline = NIODeadline.now() + configuration.drainTimeout
        for channel in channels {
            let remaining = deadline - .now()
            if remaining <= .zero {
                channel.close(promise: nil)
                continue
            }
            let timeout = channel.eventLoop.scheduleTask(in: remaining) { channel.close(promise: nil) }
            // Waiting for the close only; how it closed does not matter here.
            try? await channel.closeFuture.get()
            timeout.cancel()
        }
    }
}
