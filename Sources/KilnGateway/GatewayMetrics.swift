import Prometheus

/// The gateway's Prometheus metrics.
public final class GatewayMetrics: Sendable {
    public let registry = PrometheusCollectorRegistry()
    let dispatchLatency: DurationHistogram
    let sseClients: Gauge
    let uploadsInProgress: Gauge
    /// Request-body bytes received by `POST /build`, and archive bytes spooled to disk from them.
    let uploadBytesReceived: Counter
    let uploadBytesSpooled: Counter
    let bytesRelayed: Counter
    let eventsStored: Counter
    let jobsByStatus: [Job.Status: Gauge]
    private let rejected: [RejectedBusMessage: Counter]

    /// Why a message from the bus was dropped.
    enum RejectedBusMessage: String, CaseIterable {
        /// Chunk headers (index, count, size) that describe no real chunk.
        case badChunk = "bad_chunk"
        /// A message about a job from another authenticated user than the one that accepted it.
        case wrongSender = "wrong_sender"
    }

    func busMessagesRejected(_ reason: RejectedBusMessage) { rejected[reason]?.increment() }

    /// Which per-caller limit answered 429.
    enum RequestLimit: String, CaseIterable {
        case submissions
        case eventStreams = "event_streams"
        case uploads
    }

    private let limited: [RequestLimit: Counter]
    func requestsLimited(_ limit: RequestLimit) { limited[limit]?.increment() }

    public init() {
        dispatchLatency = registry.makeDurationHistogram(
            descriptor: .init(
                namespace: "kiln", subsystem: "gateway", metricName: "dispatch_latency", unitName: "seconds",
                helpText: "From dispatch request to the worker's acceptance"),
            buckets: [
                .microseconds(500), .milliseconds(1), .milliseconds(2), .milliseconds(5), .milliseconds(10), .milliseconds(50),
                .milliseconds(250), .seconds(1), .seconds(5),
            ])
        sseClients = registry.makeGauge(
            descriptor: .init(
                namespace: "kiln", subsystem: "gateway", metricName: "sse_clients", unitName: "",
                helpText: "Connected SSE clients"))
        uploadsInProgress = registry.makeGauge(
            descriptor: .init(
                namespace: "kiln", subsystem: "gateway", metricName: "uploads_in_progress", unitName: "",
                helpText: "POST /build bodies being received (upload slots held)"))
        uploadBytesReceived = registry.makeCounter(
            descriptor: .init(
                namespace: "kiln", subsystem: "gateway", metricName: "upload_bytes_received", unitName: "total",
                helpText: "Request-body bytes received by POST /build"))
        uploadBytesSpooled = registry.makeCounter(
            descriptor: .init(
                namespace: "kiln", subsystem: "gateway", metricName: "upload_bytes_spooled", unitName: "total",
                helpText: "Source-archive bytes written to the upload spool"))
        bytesRelayed = registry.makeCounter(
            descriptor: .init(
                namespace: "kiln", subsystem: "gateway", metricName: "sse_bytes_relayed", unitName: "total",
                helpText: "Bytes written to SSE clients"))
        eventsStored = registry.makeCounter(
            descriptor: .init(
                namespace: "kiln", subsystem: "gateway", metricName: "events_stored", unitName: "total",
                helpText: "Build events stored"))
        var gauges: [Job.Status: Gauge] = [:]
        for s in [Job.Status.waiting, .building, .ready, .error, .cancelled] {
            gauges[s] = registry.makeGauge(
                descriptor: .init(namespace: "kiln", subsystem: "gateway", metricName: "jobs", unitName: "", helpText: "Jobs by status"), labels: [("status", s.rawValue)]
            )
        }
        jobsByStatus = gauges
        var counters: [RejectedBusMessage: Counter] = [:]
        for r in RejectedBusMessage.allCases {
            counters[r] = registry.makeCounter(
                descriptor: .init(
                    namespace: "kiln", subsystem: "gateway", metricName: "bus_messages_rejected", unitName: "total",
                    helpText: "Bus messages dropped by the gateway, by reason"), labels: [("reason", r.rawValue)])
        }
        rejected = counters
        var l: [RequestLimit: Counter] = [:]
        for r in RequestLimit.allCases {
            l[r] = registry.makeCounter(
                descriptor: .init(
                    namespace: "kiln", subsystem: "gateway", metricName: "requests_limited", unitName: "total",
                    helpText: "Requests answered 429 by a per-caller limit"), labels: [("limit", r.rawValue)])
        }
        limited = l
    }
}
