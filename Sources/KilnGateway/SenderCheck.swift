import KilnBus
import KilnBusClient
import Logging

/// Whether a message about a job comes from the broker-authenticated identity bound to the job at
/// acceptance (`kiln-sender`, stamped by the broker). Without a bound identity (a broker that does
/// not authenticate users) only the worker id inside the message can be checked, by the caller.
/// A mismatch is counted and logged.
struct SenderCheck: Sendable {
    let metrics: GatewayMetrics
    let logger: Logger

    func accepts(_ message: BusMessage, identity: String?, job: String, what: String) -> Bool {
        guard let identity else { return true }
        let sender = message.headers?[BusHeader.senderHeader]
        if sender == identity { return true }
        metrics.busMessagesRejected(.wrongSender)
        logger.warning(
            "dropped \(what) from '\(sender ?? "nobody")': the job belongs to '\(identity)'",
            metadata: ["job_id": "\(job)", "connection": "\(message.headers?[BusHeader.senderConnectionHeader] ?? "?")"])
        return false
    }
}
