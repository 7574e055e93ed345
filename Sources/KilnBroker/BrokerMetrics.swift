import Prometheus

/// The broker's Prometheus metrics (design §2 "Monitoring").
public final class BrokerMetrics: Sendable {
    public let registry: PrometheusCollectorRegistry
    let connections: Gauge
    let connectionsTotal: Counter
    let subscriptions: Gauge
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

    public init(registry: PrometheusCollectorRegistry = PrometheusCollectorRegistry()) {
        self.registry = registry
        connections = registry.makeGauge(
            descriptor: .init(namespace: "kiln", subsystem: "broker", metricName: "connections", unitName: "", helpText: "Open client connections"))
        connectionsTotal = registry.makeCounter(
            descriptor: .init(namespace: "kiln", subsystem: "broker", metricName: "connections", unitName: "total", helpText: "Client connections accepted"))
        subscriptions = registry.makeGauge(
            descriptor: .init(namespace: "kiln", subsystem: "broker", metricName: "subscriptions", unitName: "", helpText: "Live subscriptions"))
        messagesIn = registry.makeCounter(
            descriptor: .init(namespace: "kiln", subsystem: "broker", metricName: "messages_in", unitName: "total", helpText: "Messages published by clients"))
        bytesIn = registry.makeCounter(
            descriptor: .init(namespace: "kiln", subsystem: "broker", metricName: "bytes_in", unitName: "total", helpText: "Payload bytes published by clients"))
        messagesOut = registry.makeCounter(
            descriptor: .init(namespace: "kiln", subsystem: "broker", metricName: "messages_out", unitName: "total", helpText: "Messages delivered to subscribers"))
        bytesOut = registry.makeCounter(
            descriptor: .init(namespace: "kiln", subsystem: "broker", metricName: "bytes_out", unitName: "total", helpText: "Payload bytes delivered to subscribers"))
        slowConsumers = registry.makeCounter(
            descriptor: .init(namespace: "kiln", subsystem: "broker", metricName: "slow_consumers", unitName: "total", helpText: "Connections cut off as slow consumers"))
        staleConnections = registry.makeCounter(
            descriptor: .init(
                namespace: "kiln", subsystem: "broker", metricName: "stale_connections", unitName: "total", helpText: "Connections closed for unanswered pings"))
        protocolErrors = registry.makeCounter(
            descriptor: .init(namespace: "kiln", subsystem: "broker", metricName: "protocol_errors", unitName: "total", helpText: "err frames sent to clients"))
        var r: [Limit: Counter] = [:]
        for limit in Limit.allCases {
            r[limit] = registry.makeCounter(
                descriptor: .init(
                    namespace: "kiln", subsystem: "broker", metricName: "limit_refusals", unitName: "total",
                    helpText: "Connections or requests refused by a configured limit"), labels: [("limit", limit.rawValue)])
        }
        refusals = r
    }

    @inline(__always)
    func recordDeliveries(_ count: Int, bytes: Int) {
        messagesOut.increment(by: Int64(count))
        bytesOut.increment(by: Int64(bytes))
    }

    /// Prometheus text exposition.
    public func render() -> String { registry.emitToString() }
}

extension Gauge {
    func increment(by amount: Int) { increment(by: Double(amount)) }
    func decrement(by amount: Int) { decrement(by: Double(amount)) }
}
