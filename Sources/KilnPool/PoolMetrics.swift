import Prometheus

public final class PoolMetrics: Sendable {
    public let registry = PrometheusCollectorRegistry()
    let idle: Gauge
    let busy: Gauge
    let ready: Gauge
    let started: Counter
    let cleanedUp: Counter

    public init() {
        idle = registry.makeGauge(
            descriptor: .init(
                namespace: "kiln", subsystem: "pool", metricName: "idle_workers", unitName: "",
                helpText: "Workers started and waiting for a build"))
        ready = registry.makeGauge(
            descriptor: .init(
                namespace: "kiln", subsystem: "pool", metricName: "ready_workers", unitName: "",
                helpText: "Idle workers that have announced themselves ready (subscribed)"))
        busy = registry.makeGauge(
            descriptor: .init(
                namespace: "kiln", subsystem: "pool", metricName: "busy_workers", unitName: "",
                helpText: "Workers building"))
        started = registry.makeCounter(
            descriptor: .init(
                namespace: "kiln", subsystem: "pool", metricName: "workers_started", unitName: "total",
                helpText: "Workers started"))
        cleanedUp = registry.makeCounter(
            descriptor: .init(
                namespace: "kiln", subsystem: "pool", metricName: "workers_cleaned_up", unitName: "total",
                helpText: "Workers that died leaving cgroups, mounts or scratch behind, cleaned up by the pool"))
    }
}
