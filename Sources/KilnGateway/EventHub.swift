import NIOConcurrencyHelpers

/// Fans stored events out to live SSE clients. Each client has a bounded buffer; a client that falls
/// behind it is cut off (its stream ends) so one slow reader never slows the relay or the others —
/// it reconnects with Last-Event-ID and continues from the store.
public final class EventHub: Sendable {
    public enum Item: Sendable {
        case event(StoredEvent)
        case overflow
    }

    struct Subscriber {
        var continuation: AsyncStream<Item>.Continuation
    }

    private let state = NIOLockedValueBox<(next: Int, subscribers: [String: [Int: Subscriber]])>((0, [:]))
    let backlog: Int

    public init(backlog: Int) { self.backlog = backlog }

    public var clientCount: Int { state.withLockedValue { $0.subscribers.values.reduce(0) { $0 + $1.count } } }

    /// Live events of `job` from now on.
    public func subscribe(job: String) -> AsyncStream<Item> {
        let (stream, continuation) = AsyncStream<Item>.makeStream(bufferingPolicy: .bufferingOldest(backlog))
        let id = state.withLockedValue { s -> Int in
            s.next += 1
            s.subscribers[job, default: [:]][s.next] = Subscriber(continuation: continuation)
            return s.next
        }
        continuation.onTermination = { [weak self] _ in
            self?.state.withLockedValue { s in
                s.subscribers[job]?[id] = nil
                if s.subscribers[job]?.isEmpty == true { s.subscribers[job] = nil }
            }
        }
        return stream
    }

    public func publish(_ event: StoredEvent) {
        let subs = state.withLockedValue { $0.subscribers[event.jobID].map { Array($0.values) } ?? [] }
        for s in subs {
            if case .dropped = s.continuation.yield(.event(event)) {
                s.continuation.finish()
            }
        }
    }
}
