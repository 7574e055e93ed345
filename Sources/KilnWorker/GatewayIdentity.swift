import KilnBus
import KilnBusClient

/// Whose build requests and control messages a worker acts on. On a bus that names senders
/// (kiln-broker with a users file or worker credentials stamps every message with `kiln-sender`, and
/// never passes on a client's own), only the gateway's: another login — a leaked service account, a
/// users file with a permission too many — cannot hand the worker a build of its own or cancel,
/// acknowledge or replay the job it took. On a bus that names nobody (an open or shared-token broker)
/// there is no identity to check; the bus's own permissions are all there is (docs/security.md).
public struct GatewayIdentity: Sendable, Equatable {
    /// The gateway's authenticated name on the bus (its users-file login, or its certificate's
    /// common name under mTLS).
    public var name: String

    public init(name: String = "gateway") { self.name = name }

    /// Whether `message` may come from the gateway.
    public func mayHaveSent(_ message: BusMessage) -> Bool {
        guard let sender = message.headers?[BusHeader.senderHeader] else { return true }
        return sender == name
    }
}
