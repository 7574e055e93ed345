import KilnMessages
import Metrics

/// The fetch service's metrics (swift-metrics; the executable exports them as Prometheus): what it
/// served, what it refused and why, its cache's hits and size, and the upstream work it did.
public final class FetchMetrics: Sendable {
    public enum CacheResult: String, Sendable { case hit, miss, evicted }

    let factory: any MetricsFactory
    /// Bytes the cache holds (after each eviction pass).
    let cacheBytes: Meter
    /// Workers with an open account.
    let trackedWorkers: Meter
    /// Bytes downloaded from the registry (cache misses).
    let upstreamBytes: Counter
    /// Resolving and packing one commit.
    let gitPackSeconds: Timer
    /// Bytes the compiled-dependency cache holds, and entries workers stored.
    let dependencyCacheBytes: Meter
    let dependencyEntriesStored: Counter

    public init(factory: any MetricsFactory = MetricsSystem.factory) {
        self.factory = factory
        cacheBytes = Meter(label: "kiln_fetch_cache_bytes", factory: factory)
        trackedWorkers = Meter(label: "kiln_fetch_tracked_workers", factory: factory)
        upstreamBytes = Counter(label: "kiln_fetch_upstream_bytes_total", factory: factory)
        gitPackSeconds = Timer(label: "kiln_fetch_git_pack_seconds", preferredDisplayUnit: .seconds, factory: factory)
        dependencyCacheBytes = Meter(label: "kiln_fetch_dependency_cache_bytes", factory: factory)
        dependencyEntriesStored = Counter(label: "kiln_fetch_dependency_entries_stored_total", factory: factory)
    }

    func served(_ kind: FetchKind, bytes: Int) {
        Counter(label: "kiln_fetch_requests_total", dimensions: [("kind", kind.rawValue)], factory: factory).increment()
        Counter(label: "kiln_fetch_bytes_served_total", dimensions: [("kind", kind.rawValue)], factory: factory).increment(by: Int64(bytes))
    }

    func refused(_ reason: FetchRefusal.Reason) {
        Counter(label: "kiln_fetch_refused_total", dimensions: [("reason", reason.rawValue)], factory: factory).increment()
    }

    func dependencyLookups(hit: Bool) {
        Counter(label: "kiln_fetch_dependency_lookups_total", dimensions: [("result", hit ? "hit" : "miss")], factory: factory).increment()
    }

    func cache(_ result: CacheResult) {
        Counter(label: "kiln_fetch_cache_total", dimensions: [("result", result.rawValue)], factory: factory).increment()
    }
}
