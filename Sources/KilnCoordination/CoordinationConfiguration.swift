import Foundation

/// What the coordination layer is told by the gateway's configuration (`GatewayConfiguration.coordination`):
/// the settings of dispatch, intake, retries, retention and ownership, and nothing of HTTP.
public struct CoordinationConfiguration: Sendable {
    /// This gateway among several sharing one job store (its dispatch claims carry it).
    public var instanceID: String
    /// Attempts per job in all (retries of failures that are not the build's fault).
    public var maxAttempts: Int
    /// How long a dispatched worker has to accept.
    public var ackTimeout: Duration
    /// Events held per job while its offer is settled (`DispatchHoldback`).
    public var maxHeldEvents: Int
    /// How long a finished job's result is kept.
    public var retention: Duration
    /// A gateway whose heartbeat is older than this is presumed gone and its building jobs adopted.
    public var gatewayLease: Duration
    /// A building job whose worker is silent this long ends as `error`.
    public var workerSilenceLimit: Duration
    /// Uploads larger than this are not inlined in the dispatch request; workers fetch them in chunks.
    public var inlineSourceLimit: Int
    public var sourceChunkSize: Int
    /// The largest result a worker may upload.
    public var maxResultBytes: Int64

    public init(
        instanceID: String, maxAttempts: Int = 2, ackTimeout: Duration = .seconds(5), maxHeldEvents: Int = 256,
        retention: Duration = .seconds(7 * 24 * 3600), gatewayLease: Duration = .seconds(5), workerSilenceLimit: Duration = .seconds(15),
        inlineSourceLimit: Int = 2 << 20, sourceChunkSize: Int = 1 << 20, maxResultBytes: Int64 = 16 << 30
    ) {
        self.instanceID = instanceID
        self.maxAttempts = maxAttempts
        self.ackTimeout = ackTimeout
        self.maxHeldEvents = maxHeldEvents
        self.retention = retention
        self.gatewayLease = gatewayLease
        self.workerSilenceLimit = workerSilenceLimit
        self.inlineSourceLimit = inlineSourceLimit
        self.sourceChunkSize = sourceChunkSize
        self.maxResultBytes = maxResultBytes
    }
}
