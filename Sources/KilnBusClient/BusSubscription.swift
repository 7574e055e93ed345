import KilnBus

/// A subscription as an `AsyncSequence` of messages.
///
/// The sequence ends when the subscription is unsubscribed, when it has delivered `max` messages, or
/// when the client closes; cancelling the task that iterates it unsubscribes. Iterate it from one task.
/// Messages are buffered without bound on the client side; the broker's outbound cap is what protects
/// the system from a subscriber that never reads.
public struct BusSubscription: AsyncSequence, Sendable {
    public typealias Element = BusMessage

    public let sid: String
    public let subject: String
    public let queue: String?
    public let max: Int?
    let messages: MessageQueue
    let client: BusClient

    public struct AsyncIterator: AsyncIteratorProtocol {
        let messages: MessageQueue
        var batch: [BusMessage] = []
        var position = 0

        public mutating func next() async -> BusMessage? {
            if position < batch.count {
                defer { position += 1 }
                return batch[position]
            }
            guard let next = await messages.take(), !next.isEmpty else { return nil }
            batch = next
            position = 1
            return next[0]
        }
    }

    public func makeAsyncIterator() -> AsyncIterator { AsyncIterator(messages: messages) }

    /// Removes the subscription now, or after `max` total deliveries.
    public func unsubscribe(after max: Int? = nil) async throws {
        try await client.unsubscribe(sid: sid, max: max)
    }
}
