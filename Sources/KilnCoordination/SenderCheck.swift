import KilnBus
import KilnBusClient
import KilnMessages
import Logging

/// Whether a message about a job comes from the identity bound to the job at acceptance.
///
/// Two proofs, one per transport: everything a worker publishes ends in its own id
/// (`Subjects.publishingWorker`), which per-worker permissions reserve to that worker — kiln-broker's
/// minted credentials and nats-server's minted user JWTs alike; kiln-broker also stamps the
/// authenticated user (`kiln-sender`), which must then agree. On a bus without per-worker permissions
/// (an open development broker, a nats-server without Kiln's accounts) the subject is only a claim,
/// as the message body's worker id is. A mismatch is counted and logged.
struct SenderCheck: Sendable {
    let metrics: GatewayMetrics
    let logger: Logger

    /// The identity a job is bound to when `worker` accepts it: the broker's stamp on the acceptance
    /// where there is one, else the worker's id (held to the subjects its later messages come on).
    static func identity(acceptedBy worker: String, stamp: String?) -> String { stamp ?? identity(ofWorker: worker) }

    static func identity(ofWorker worker: String) -> String { WorkerCredential.identity(of: worker) }

    /// True when the message's subject (and stamp, if any) say it comes from `identity`. The
    /// allocation-free check of the events' hot path; `accepts` is the logged one.
    static func matches(_ message: BusMessage, identity: String?) -> Bool {
        guard let identity else { return true }  // a job accepted before identities were recorded
        let stamp = message.headers?[BusHeader.senderHeader]
        if let stamp, stamp != identity { return false }
        guard let worker = Subjects.publishingWorker(of: message.subject) else { return false }
        // A stamped identity names the broker user; an unstamped one is the worker id itself.
        return stamp != nil || WorkerCredential.workerID(ofIdentity: identity).map { $0.utf8.elementsEqual(worker.utf8) } ?? false
    }

    func accepts(_ message: BusMessage, identity: String?, job: String, what: String) -> Bool {
        if Self.matches(message, identity: identity) { return true }
        metrics.busMessagesRejected(.wrongSender)
        logger.warning(
            "dropped \(what) from '\(message.headers?[BusHeader.senderHeader] ?? message.subject)': the job belongs to '\(identity ?? "?")'",
            metadata: ["job_id": "\(job)", "connection": "\(message.headers?[BusHeader.senderConnectionHeader] ?? "?")"])
        return false
    }
}
