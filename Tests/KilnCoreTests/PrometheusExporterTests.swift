import KilnMonitor
import Metrics
import Testing

@Suite struct PrometheusExporterTests {
    /// Libraries record through swift-metrics with the factory they are given; the exporter renders it.
    @Test func whatALibraryRecordsIsExportedUnderItsName() {
        let exporter = PrometheusExporter(timerBuckets: ["kiln_test_latency_seconds": [.milliseconds(1), .milliseconds(10)]])
        Counter(label: "kiln_test_events_total", factory: exporter.factory).increment(by: 3)
        let meter = Meter(label: "kiln_test_clients", dimensions: [("kind", "sse")], factory: exporter.factory)
        meter.increment()
        meter.increment()
        meter.decrement()
        Timer(label: "kiln_test_latency_seconds", factory: exporter.factory).recordNanoseconds(5_000_000)
        let text = exporter.exposition()
        #expect(text.contains("kiln_test_events_total 3"), "\(text)")
        #expect(text.contains(#"kiln_test_clients{kind="sse"} 1"#), "\(text)")
        #expect(text.contains(#"kiln_test_latency_seconds_bucket{le="0.001"} 0"#), "\(text)")
        #expect(text.contains(#"kiln_test_latency_seconds_bucket{le="0.01"} 1"#), "\(text)")
    }
}
