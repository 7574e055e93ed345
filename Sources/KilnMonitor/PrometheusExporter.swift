import Metrics
import Prometheus

/// The executables' metrics backend: libraries record through swift-metrics, and each executable
/// bootstraps this once, so everything they record lands in one Prometheus registry that its
/// `/metrics` endpoint renders.
public struct PrometheusExporter: Sendable {
    public static let contentType = "text/plain; version=0.0.4; charset=utf-8"

    public let registry: PrometheusCollectorRegistry
    public let factory: PrometheusMetricsFactory

    /// `timerBuckets`: histogram buckets per timer label, for timers whose range the default
    /// buckets (5 ms to 10 s) do not fit.
    public init(timerBuckets: [String: [Duration]] = [:]) {
        registry = PrometheusCollectorRegistry()
        var factory = PrometheusMetricsFactory(registry: registry)
        factory.durationHistogramBuckets = timerBuckets
        self.factory = factory
    }

    /// Makes this the process's swift-metrics backend. Once per process (swift-metrics refuses a
    /// second bootstrap), by the executable's main.
    public func bootstrap() {
        MetricsSystem.bootstrap(factory)
    }

    /// The Prometheus text exposition of everything recorded so far.
    public func exposition() -> String { registry.emitToString() }
}
