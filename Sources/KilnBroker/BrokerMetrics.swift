import Metrics

/// The broker's metrics (design §2 "Monitoring"), recorded through swift-metrics: the executable
/// picks the backend (Prometheus, exported on the monitor port); tests hand in a factory of their own.
public final class BrokerMetrics: Sendable {
    let connections: Meter
    let connectionsTotal: Counter
    let subscriptions: Meter
    let messagesIn: Counter
    let bytesIn: Counter
    let messagesOut: Counter
    let bytesOut: Counter
    let slowConsumers: Counter
    let staleConnections: Counter
    let protocolErrors: Counter
    private let refusals: [Limit: Counter]

    /// The limits a connection can run into.
    public enum Limit: String, CaseIterable, Sendable {
        case connections
        case connectionsPerAddress = "connections_per_address"
        case handshake
        case preConnectFrame = "pre_connect_frame"
        case subscriptions
    }

    func limitRefusals(_ limit: Limit) { refusals[limit]?.increment() }

    public init(factory: any MetricsFactory = MetricsSystem.factory) {
        func counter(_ name: String) -> Counter { Counter(label: "kiln_broker_" + name + "_total", factory: factory) }
        connections = Meter(label: "kiln_broker_connections", factory: factory)
        connectionsTotal = counter("connections")
        subscriptions = Meter(label: "kiln_broker_subscriptions", factory: factory)
        messagesIn = counter("messages_in")
        bytesIn = counter("bytes_in")
        messagesOut = counter("messages_out")
        bytesOut = counter("bytes_out")
        slowConsumers = counter("slow_consumers")
        staleConnections = counter("stale_connections")
        protocolErrors = counter("protocol_errors")
        var r: [Limit: Counter] = [:]
        for limit in Limit.allCases {
            r[limit] = Counter(label: "kiln_broker_limit_refusals_total", dimensions: [("limit", limit.rawValue)], factory: factory)
        }
        refusals = r
    }

    @inline(__always)
    func recordDeliveries(_ count: Int, bytes: Int) {
        messagesOut.increment(by: count)
        bytesOut.increment(by: bytes)
    }
}
