import KilnBus
import NIOCore

/// A live subscription held by the broker. Mutable state (`delivered`, `isRemoved`) is only touched
/// under the router's lock, which is what makes one-shot (`max: 1`) delivery atomic.
// @unchecked: see above: mutation only under `MessageRouter`'s lock.
public final class Subscription: @unchecked Sendable {
    public let connectionID: Int
    public let sid: String
    public let subject: String
    public let queue: String?
    /// Total deliveries allowed, or nil for unlimited.
    public internal(set) var max: Int?
    public internal(set) var delivered: Int = 0
    public internal(set) var isRemoved = false
    /// `,"sid":"…"}` pre-encoded, so building each `msg` header is a memcpy.
    let sidSuffix: [UInt8]
    let outbound: OutboundBuffer?
    /// The subscriber's outbound cap; a delivery that pushes the backlog past it cuts the subscriber off.
    let outboundCap: Int
    let deliveryFilter: SubjectPermissions.Rule?

    public init(
        connectionID: Int, sid: String, subject: String, queue: String? = nil, max: Int? = nil,
        outbound: OutboundBuffer? = nil, outboundCap: Int = .max, deliveryFilter: SubjectPermissions.Rule? = nil
    ) {
        self.connectionID = connectionID
        self.sid = sid
        self.subject = subject
        self.queue = queue
        self.max = max
        self.outbound = outbound
        self.outboundCap = outboundCap
        self.deliveryFilter = deliveryFilter
        var b = ByteBuffer()
        b.writeStaticString(",\"sid\":")
        b.writeJSONString(sid)
        b.writeStaticString("}")
        self.sidSuffix = Array(b.readableBytesView)
    }

    /// True once `max` deliveries have been made.
    var isSpent: Bool { max.map { delivered >= $0 } ?? false }
}
