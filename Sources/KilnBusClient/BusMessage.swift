import KilnBus
import NIOCore

/// A message delivered to a subscription.
public struct BusMessage: Sendable {
    public var subject: String
    public var reply: String?
    public var headers: [String: String]?
    public var payload: ByteBuffer

    public init(subject: String, reply: String? = nil, headers: [String: String]? = nil, payload: ByteBuffer = ByteBuffer()) {
        self.subject = subject
        self.reply = reply
        self.headers = headers
        self.payload = payload
    }

    /// `headers["status"]`, e.g. "503" for no responders.
    public var status: String? { headers?["status"] }

    public var payloadBytes: [UInt8] { Array(payload.readableBytesView) }
    public var payloadString: String { String(buffer: payload) }
}
