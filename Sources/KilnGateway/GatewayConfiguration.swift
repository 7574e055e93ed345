import Foundation
import KilnBusClient
import KilnCoordination
import KilnMessages
import Logging

public struct GatewayConfiguration: Sendable {
    public var host = "127.0.0.1"
    public var port = 8080
    /// Serve HTTPS with this certificate and key (nil: plain HTTP, e.g. behind a TLS-terminating proxy).
    public var tls: GatewayTLS?
    /// SQLite, results and uploads live here.
    public var dataDirectory: String
    /// `postgres://…` keeps jobs and events in PostgreSQL (#15); nil keeps them in SQLite in `dataDirectory`.
    public var database: String?
    public var bus: BusClient.Configuration
    /// Bearer tokens and the principals they stand for (`PrincipalDirectory`); nil or open = no auth.
    public var principals: PrincipalDirectory?
    /// Public key files served at /keys.
    public var keyFiles: [String] = []
    public var maxBodyBytes = 256 << 20
    /// Attempts per job: a failure that is not the build's fault (its worker lost, a retryable fetch
    /// or farm failure) runs it again on another worker, up to this many times in all.
    public var maxAttempts = 2
    /// The most a build may ask for in `build_config` (and whether it may ask for network).
    public var buildMaxima = BuildConfig.Maxima()
    public var retention: Duration = .seconds(7 * 24 * 3600)
    /// How long a dispatched worker has to accept.
    public var ackTimeout: Duration = .seconds(5)
    /// Events held per job while its offer is settled (`DispatchHoldback`); beyond, they are dropped,
    /// counted, and replayed by the worker on the gap.
    public var maxHeldEvents = 256
    /// This gateway among several sharing one job store (its dispatch claims carry it).
    public var instanceID = "g" + UUID().uuidString.replacingOccurrences(of: "-", with: "").prefix(12).lowercased()
    /// A gateway whose heartbeat in the job store is older than this is presumed gone: another
    /// gateway (or this one restarted) adopts its building jobs. A graceful stop hands them over at once.
    public var gatewayLease: Duration = .seconds(5)
    /// The longest a PostgreSQL operation may take before it fails and the connection pool is replaced
    /// (`PostgresPool`).
    public var databaseTimeout: Duration = .seconds(10)
    /// A building job whose worker is silent this long ends as `error` (3 heartbeats of 5 s).
    public var workerSilenceLimit: Duration = .seconds(15)
    public var sseKeepalive: Duration = .seconds(15)
    /// Events buffered per SSE client before it is cut off (it can resume with Last-Event-ID).
    public var sseBacklog = 4096
    /// Uploads larger than this are not inlined in the dispatch request; workers fetch them in chunks.
    public var inlineSourceLimit = 2 << 20
    public var sourceChunkSize = 1 << 20
    /// Event streams and submissions per principal (`RequestLimiter`).
    public var requestLimits = RequestLimiter.Configuration()
    /// The largest result tarball a worker may upload; chunk headers claiming more are refused.
    public var maxResultBytes: Int64 = 16 << 30

    public init(dataDirectory: String, bus: BusClient.Configuration) {
        self.dataDirectory = dataDirectory
        self.bus = bus
    }
}

extension GatewayConfiguration {
    /// The coordination layer's part.
    public var coordination: CoordinationConfiguration {
        CoordinationConfiguration(
            instanceID: instanceID, maxAttempts: maxAttempts, ackTimeout: ackTimeout, maxHeldEvents: maxHeldEvents, retention: retention,
            gatewayLease: gatewayLease, workerSilenceLimit: workerSilenceLimit, inlineSourceLimit: inlineSourceLimit,
            sourceChunkSize: sourceChunkSize, maxResultBytes: maxResultBytes)
    }

    /// Room for a frame's headers and the build request's JSON around a source or chunk.
    static let frameOverhead = 16 * 1024

    /// Source chunks and inline sources sized to fit the broker's largest frame: a nats-server
    /// accepts 1 MiB by default where kiln-broker accepts 8 MiB, and a request that does not fit is
    /// refused by the broker, not split. Inline sources travel base64 in JSON (4/3 the size).
    func fitted(toBrokerFrame maxFrame: Int, logger: Logger) -> GatewayConfiguration {
        var fitted = self
        let room = Swift.max(maxFrame - Self.frameOverhead, 4096)
        fitted.sourceChunkSize = Swift.min(sourceChunkSize, room)
        fitted.inlineSourceLimit = Swift.min(inlineSourceLimit, room / 4 * 3)
        if fitted.sourceChunkSize != sourceChunkSize || fitted.inlineSourceLimit != inlineSourceLimit {
            logger.info(
                "fitted to the broker's largest frame",
                metadata: ["max_frame": "\(maxFrame)", "source_chunk_size": "\(fitted.sourceChunkSize)", "inline_source_limit": "\(fitted.inlineSourceLimit)"])
        }
        return fitted
    }
}
