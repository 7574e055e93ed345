import Metrics

/// The pool's metrics, recorded through swift-metrics (the executable exports them as Prometheus).
public final class PoolMetrics: Sendable {
    /// Workers started and waiting for a build.
    let idle: Meter
    /// Idle workers that have announced themselves ready (subscribed).
    let ready: Meter
    /// Workers launched that have not announced themselves yet (a VM still booting).
    let starting: Meter
    /// Launch to announcement, per worker: a process worker's start-up, a VM worker's boot; by the
    /// isolation the worker announced (`process`, `vm-kvm`, `vm-tcg`).
    let bootTime: Timer
    let factory: any MetricsFactory
    /// Workers killed because they never announced themselves within the boot timeout.
    let bootTimeouts: Counter
    /// Workers building.
    let busy: Meter
    let started: Counter
    /// Workers that died leaving cgroups, mounts or scratch behind, cleaned up by the pool.
    let cleanedUp: Counter
    /// Worker keys certified with the farm key, and certification requests refused.
    let certificatesIssued: Counter
    let certificatesRefused: Counter

    public init(factory: any MetricsFactory = MetricsSystem.factory) {
        idle = Meter(label: "kiln_pool_idle_workers", factory: factory)
        ready = Meter(label: "kiln_pool_ready_workers", factory: factory)
        busy = Meter(label: "kiln_pool_busy_workers", factory: factory)
        starting = Meter(label: "kiln_pool_starting_workers", factory: factory)
        bootTime = Timer(label: "kiln_pool_worker_boot_seconds", factory: factory)
        self.factory = factory
        bootTimeouts = Counter(label: "kiln_pool_boot_timeouts_total", factory: factory)
        started = Counter(label: "kiln_pool_workers_started_total", factory: factory)
        cleanedUp = Counter(label: "kiln_pool_workers_cleaned_up_total", factory: factory)
        certificatesIssued = Counter(label: "kiln_pool_certificates_issued_total", factory: factory)
        certificatesRefused = Counter(label: "kiln_pool_certificates_refused_total", factory: factory)
    }
}

extension PoolMetrics {
    /// `kiln_pool_worker_boot_seconds{isolation=…}` beside the unlabelled total; `isolation` is one of
    /// the three values the worker may announce (anything else is counted as `other`).
    func recordBoot(nanoseconds: Int64, isolation: String?) {
        bootTime.recordNanoseconds(nanoseconds)
        let label = ["process", "vm-kvm", "vm-tcg"].contains(isolation ?? "") ? isolation! : "other"
        Timer(label: "kiln_pool_worker_boot_by_isolation_seconds", dimensions: [("isolation", label)], factory: factory).recordNanoseconds(nanoseconds)
    }
}
