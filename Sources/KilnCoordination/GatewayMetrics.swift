import KilnJobs
import Metrics

/// The gateway's metrics, recorded through swift-metrics: the executable picks the backend
/// (Prometheus, exported at `/metrics`); tests hand in a factory of their own.
public final class GatewayMetrics: Sendable {
    /// From dispatch request to the worker's acceptance.
    let dispatchLatency: Timer
    package let sseClients: Meter
    /// `POST /build` bodies being received (upload slots held).
    package let uploadsInProgress: Meter
    /// Request-body bytes received by `POST /build`, and archive bytes spooled to disk from them.
    package let uploadBytesReceived: Counter
    package let uploadBytesSpooled: Counter
    /// Bytes written to SSE clients.
    package let bytesRelayed: Counter
    let eventsStored: Counter
    /// Events the gateway could not store (the store failing): each is also logged as an error.
    let eventsLost: Counter
    /// Jobs that reached a terminal status here, by status.
    private let jobsEnded: [Job.Status: Counter]
    func jobEnded(_ status: Job.Status) { jobsEnded[status]?.increment() }
    /// Building jobs this gateway took over from one that stopped heartbeating (or from before a restart).
    let jobsAdopted: Counter
    package let jobsByStatus: [Job.Status: Meter]
    private let rejected: [RejectedBusMessage: Counter]

    /// The dispatch-latency buckets a histogram backend should use: dispatch is promised in
    /// milliseconds, so the default buckets (5 ms and up) would hide it.
    public static let timerBuckets: [String: [Duration]] = [
        "kiln_gateway_dispatch_latency_seconds": [
            .microseconds(500), .milliseconds(1), .milliseconds(2), .milliseconds(5), .milliseconds(10), .milliseconds(50),
            .milliseconds(250), .seconds(1), .seconds(5),
        ]
    ]

    /// Why a message from the bus was dropped.
    enum RejectedBusMessage: String, CaseIterable {
        /// Chunk headers (index, count, size) that describe no real chunk.
        case badChunk = "bad_chunk"
        /// A message about a job from another authenticated user than the one that accepted it.
        case wrongSender = "wrong_sender"
        /// A request whose reply subject is not its worker's inbox (it would have the gateway publish elsewhere).
        case foreignReplySubject = "foreign_reply_subject"
        /// An event or request of a job being offered beyond what is held for it (`DispatchHoldback`).
        case heldBackOverflow = "held_back_overflow"
    }

    func busMessagesRejected(_ reason: RejectedBusMessage) { rejected[reason]?.increment() }

    /// Which per-caller limit answered 429.
    package enum RequestLimit: String, CaseIterable {
        case submissions
        case eventStreams = "event_streams"
        case uploads
    }

    private let limited: [RequestLimit: Counter]
    package func requestsLimited(_ limit: RequestLimit) { limited[limit]?.increment() }

    public init(factory: any MetricsFactory = MetricsSystem.factory) {
        dispatchLatency = Timer(label: "kiln_gateway_dispatch_latency_seconds", factory: factory)
        sseClients = Meter(label: "kiln_gateway_sse_clients", factory: factory)
        uploadsInProgress = Meter(label: "kiln_gateway_uploads_in_progress", factory: factory)
        uploadBytesReceived = Counter(label: "kiln_gateway_upload_bytes_received_total", factory: factory)
        uploadBytesSpooled = Counter(label: "kiln_gateway_upload_bytes_spooled_total", factory: factory)
        bytesRelayed = Counter(label: "kiln_gateway_sse_bytes_relayed_total", factory: factory)
        eventsStored = Counter(label: "kiln_gateway_events_stored_total", factory: factory)
        eventsLost = Counter(label: "kiln_gateway_events_lost_total", factory: factory)
        var ended: [Job.Status: Counter] = [:]
        for s in [Job.Status.ready, .error, .cancelled] {
            ended[s] = Counter(label: "kiln_gateway_jobs_ended_total", dimensions: [("status", s.rawValue)], factory: factory)
        }
        jobsEnded = ended
        jobsAdopted = Counter(label: "kiln_gateway_jobs_adopted_total", factory: factory)
        var meters: [Job.Status: Meter] = [:]
        for s in [Job.Status.waiting, .building, .ready, .error, .cancelled] {
            meters[s] = Meter(label: "kiln_gateway_jobs", dimensions: [("status", s.rawValue)], factory: factory)
        }
        jobsByStatus = meters
        var counters: [RejectedBusMessage: Counter] = [:]
        for r in RejectedBusMessage.allCases {
            counters[r] = Counter(label: "kiln_gateway_bus_messages_rejected_total", dimensions: [("reason", r.rawValue)], factory: factory)
        }
        rejected = counters
        var l: [RequestLimit: Counter] = [:]
        for r in RequestLimit.allCases {
            l[r] = Counter(label: "kiln_gateway_requests_limited_total", dimensions: [("limit", r.rawValue)], factory: factory)
        }
        limited = l
    }
}
