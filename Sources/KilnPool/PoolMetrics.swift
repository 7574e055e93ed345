import Prometheus

public final class PoolMetrics: Sendable {
    public let registry = PrometheusCollectorRegistry()
    let idle: Gauge
    let busy: Gauge
    let started: Counter

    public init() {
        idle = registry.makeGauge(descriptor: .init(namespace: "kiln", subsystem: "pool", metricName: "idle_workers", unitName: "",
                                                    helpText: "Workers started and waiting for a build"))
        busy = registry.makeGauge(descriptor: .init(namespace: "kiln", subsystem: "pool", metricName: "busy_workers", unitName: "",
                                                    helpText: "Workers building"))
        started = registry.makeCounter(descriptor: .init(namespace: "kiln", subsystem: "pool", metricName: "workers_started", unitName: "total",
                                                         helpText: "Workers started"))
    }
}
