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

    public init(registry: PrometheusCollectorRegistry = PrometheusCollectorRegistry()) {
        self.registry = registry
        connections = registry.makeGauge(name: "kiln_broker_connections", help: "Open client connections")
        connectionsTotal = registry.makeCounter(name: "kiln_broker_connections_total", help: "Client connections accepted")
        subscriptions = registry.makeGauge(name: "kiln_broker_subscriptions", help: "Live subscriptions")
        messagesIn = registry.makeCounter(name: "kiln_broker_messages_in_total", help: "Messages published by clients")
        bytesIn = registry.makeCounter(name: "kiln_broker_bytes_in_total", help: "Payload bytes published by clients")
        messagesOut = registry.makeCounter(name: "kiln_broker_messages_out_total", help: "Messages delivered to subscribers")
        bytesOut = registry.makeCounter(name: "kiln_broker_bytes_out_total", help: "Payload bytes delivered to subscribers")
        slowConsumers = registry.makeCounter(name: "kiln_broker_slow_consumers_total", help: "Connections cut off as slow consumers")
        staleConnections = registry.makeCounter(name: "kiln_broker_stale_connections_total", help: "Connections closed for unanswered pings")
        protocolErrors = registry.makeCounter(name: "kiln_broker_protocol_errors_total", help: "err frames sent to clients")
    }

    @inline(__always)
    func recordDelivery(bytes: Int) {
        messagesOut.increment()
        bytesOut.increment(by: Int64(bytes))
    }

    /// Prometheus text exposition.
    public func render() -> String { registry.emitToString() }
}

extension Gauge {
    func increment(by amount: Int) { increment(by: Double(amount)) }
    func decrement(by amount: Int) { decrement(by: Double(amount)) }
}
