import KilnBus

/// A subscription as an `AsyncSequence` of messages.
///
/// The sequence ends when the subscription is unsubscribed, when it has delivered `max` messages, or
/// when the client closes. Messages are buffered without bound on the client side; the broker's
/// outbound cap is what protects the system from a subscriber that never reads.
public struct BusSubscription: AsyncSequence, Sendable {
    public typealias Element = BusMessage

    public let sid: String
    public let subject: String
    public let queue: String?
    public let max: Int?
    let stream: AsyncStream<BusMessage>
    let client: BusClient

    public func makeAsyncIterator() -> AsyncStream<BusMessage>.Iterator { stream.makeAsyncIterator() }

    /// Removes the subscription now, or after `max` total deliveries.
    public func unsubscribe(after max: Int? = nil) async throws {
        try await client.unsubscribe(sid: sid, max: max)
    }
}
