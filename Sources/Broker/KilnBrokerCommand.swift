import ArgumentParser
import Foundation
import KilnBroker
import KilnCore
import KilnMonitor
import Logging
import NIOCore
import ServiceLifecycle

@main
struct KilnBrokerCommand: AsyncParsableCommand {
    static let configuration = CommandConfiguration(
        commandName: "kiln-broker",
        abstract: "Kiln's message broker: subjects, wildcards, queue groups, one-shot subscriptions, request/reply.",
        discussion: "Flags override the config file. Prints 'kiln-broker listening on HOST:PORT' once ready (useful with --port 0).",
        version: KilnVersion.current.description)

    @Option(help: "Address to listen on.") var host: String?
    @Option(help: "Port to listen on (0 picks a free one).") var port: Int?
    @Option(help: "Address of the monitor HTTP server (/healthz, /metrics).") var monitorHost: String?
    @Option(help: "Port of the monitor HTTP server (0 picks a free one, -1 disables it).") var monitorPort: Int?
    @Option(help: "JSON config file (see docs/protocol.md).") var config: String?
    @Option(help: "Shared token every client must present in 'connect'.") var token: String?
    @Option(help: "JSON users file with per-user permissions.") var users: String?
    @Option(help: "Largest frame accepted, in bytes (default 8 MiB).") var maxFrame: Int?
    @Option(help: "Per-connection outbound backlog before a slow consumer is cut off, in bytes (default 64 MiB).") var outboundCap: Int?
    @Option(help: "Seconds between keepalive pings to idle clients (default 20).") var pingInterval: Double?
    @Option(help: "Unanswered pings before a connection is closed (default 2).") var maxPingsOutstanding: Int?
    @Option(help: "Operator's credential public key (Ed25519, hex or PEM): workers may log in with credentials it signed (kiln-pool mints them).") var credentialKey:
        String?
    @Option(help: "TLS certificate chain (PEM): serve TLS only (clients use kilns://).") var tlsCert: String?
    @Option(help: "TLS private key (PEM).") var tlsKey: String?
    @Option(help: "CA (PEM) that client certificates must chain to (mTLS): a verified certificate's common name logs in as that user of --users.") var tlsClientCa:
        String?
    @Option(help: "Most open connections (default 10000).") var maxConnections: Int?
    @Option(help: "Most open connections from one remote address (default 1000).") var maxConnectionsPerAddress: Int?
    @Option(help: "With auth: seconds a new connection has to send 'connect' (default 5).") var handshakeTimeout: Double?
    @Option(help: "With auth: largest frame accepted before 'connect', in bytes (default 16384).") var preConnectMaxFrame: Int?
    @Option(help: "Most live subscriptions per connection (default 10000).") var maxSubscriptions: Int?
    @Option(help: "Log level: trace, debug, info, notice, warning, error, critical.") var logLevel: String = "info"

    func run() async throws {
        let file = try config.map { try BrokerConfigFile.load(path: $0) } ?? BrokerConfigFile()
        KilnLogging.bootstrap(level: logLevel)
        let exporter = PrometheusExporter()
        exporter.bootstrap()
        let logger = Logger(label: "kiln.broker")

        var cfg = BrokerServer.Configuration()
        cfg.host = host ?? file.host ?? cfg.host
        cfg.port = port ?? file.port ?? cfg.port
        cfg.maxFrame = maxFrame ?? file.maxFrame ?? cfg.maxFrame
        cfg.outboundCap = outboundCap ?? file.outboundCap ?? cfg.outboundCap
        if let s = pingInterval ?? file.pingIntervalSeconds { cfg.pingInterval = .nanoseconds(Int64(s * 1e9)) }
        cfg.maxPingsOutstanding = maxPingsOutstanding ?? file.maxPingsOutstanding ?? cfg.maxPingsOutstanding
        cfg.maxConnections = maxConnections ?? file.maxConnections ?? cfg.maxConnections
        cfg.maxConnectionsPerAddress = maxConnectionsPerAddress ?? file.maxConnectionsPerAddress ?? cfg.maxConnectionsPerAddress
        if let s = handshakeTimeout ?? file.handshakeTimeoutSeconds { cfg.handshakeTimeout = .nanoseconds(Int64(s * 1e9)) }
        cfg.preConnectMaxFrame = preConnectMaxFrame ?? file.preConnectMaxFrame ?? cfg.preConnectMaxFrame
        cfg.maxSubscriptionsPerConnection = maxSubscriptions ?? file.maxSubscriptions ?? cfg.maxSubscriptionsPerConnection
        guard cfg.maxConnections >= 1, cfg.maxConnectionsPerAddress >= 1, cfg.maxSubscriptionsPerConnection >= 1,
            cfg.handshakeTimeout > .zero, cfg.preConnectMaxFrame >= 1024
        else {
            throw ValidationError("connection and subscription limits must be at least 1, the handshake timeout positive, --pre-connect-max-frame at least 1024")
        }
        guard cfg.maxFrame >= 1024, cfg.maxFrame <= Int(UInt32.max) else {
            throw ValidationError("--max-frame must be between 1024 and \(UInt32.max)")
        }
        guard cfg.outboundCap >= cfg.maxFrame else { throw ValidationError("--outbound-cap must be at least --max-frame") }
        guard cfg.pingInterval > .zero, cfg.maxPingsOutstanding >= 1 else {
            throw ValidationError("--ping-interval must be positive and --max-pings-outstanding at least 1")
        }
        switch (tlsCert, tlsKey) {
        case (let cert?, let key?):
            do { cfg.tls = try BrokerTLS(certificateFile: cert, keyFile: key, clientCAFile: tlsClientCa).makeContext() } catch {
                throw ValidationError("cannot set up TLS from \(cert) and \(key): \(error)")
            }
        case (nil, nil):
            guard tlsClientCa == nil else { throw ValidationError("--tls-client-ca needs --tls-cert and --tls-key") }
        default:
            throw ValidationError("--tls-cert and --tls-key go together")
        }
        let credential = try credentialKey.map { try BrokerConfigFile.loadCredentialKey(path: $0) }
        var mode = Authenticator.Mode.none
        if let users {
            mode = .users(try BrokerConfigFile.loadUsers(path: users))
        } else if let u = file.users {
            mode = .users(u)
        } else if let t = token ?? file.token ?? ProcessInfo.processInfo.environment["KILN_BROKER_TOKEN"] {
            mode = .token(t)
        }
        cfg.authenticator = Authenticator(mode, credentialKey: credential)

        let broker = BrokerServer(configuration: cfg, metrics: BrokerMetrics(), logger: logger)
        var services: [any Service] = [broker]
        let mPort = monitorPort ?? file.monitorPort ?? 8222
        let mHost = monitorHost ?? file.monitorHost ?? cfg.host
        if mPort >= 0 {
            services.append(
                MonitorServer.makeApplication(host: mHost, port: mPort, exporter: exporter, serverName: "kiln-broker-monitor", logger: logger) { port in
                    announce("kiln-broker monitor on http://\(mHost):\(port)")
                })
        }
        let group = ServiceGroup(configuration: .init(services: services, gracefulShutdownSignals: [.sigterm, .sigint], logger: logger))
        let host = cfg.host
        try await withThrowingTaskGroup(of: Void.self) { tasks in
            tasks.addTask { try await group.run() }
            // The port is known once the server is bound (`--port 0` picks one).
            if let p = try? await broker.port { announce("kiln-broker listening on \(host):\(p)") }
            try await tasks.waitForAll()
        }
    }
}

/// Unbuffered line on stdout, so a parent process reading our pipe sees it at once.
func announce(_ line: String) {
    FileHandle.standardOutput.write(Data((line + "\n").utf8))
}
