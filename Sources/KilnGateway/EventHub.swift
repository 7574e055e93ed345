import NIOConcurrencyHelpers

/// Fans stored events out to live SSE clients. Each client has a bounded queue; a client that falls
/// behind it is cut off (its queue closes) so one slow reader never slows the relay or the others —
/// it reconnects with Last-Event-ID and continues from the store. Clients take everything queued at
/// once, so under load one socket write carries many events instead of one write per event.
public final class EventHub: Sendable {
    private let state = NIOLockedValueBox<(next: Int, subscribers: [String: [Int: EventQueue]])>((0, [:]))
    let backlog: Int

    public init(backlog: Int) { self.backlog = backlog }

    /// One ticker for all clients (not a timer per client): every `interval`, clients waiting for
    /// events are woken to send an SSE keepalive comment.
    public func runKeepalive(interval: Duration) async {
        while !Task.isCancelled {
            try? await Task.sleep(for: interval)
            let queues = state.withLockedValue { $0.subscribers.values.flatMap { Array($0.values) } }
            for q in queues { q.tick() }
        }
    }

    public var clientCount: Int { state.withLockedValue { $0.subscribers.values.reduce(0) { $0 + $1.count } } }

    /// Live events of `job` from now on; call `unsubscribe` when done.
    public func subscribe(job: String) -> (id: Int, queue: EventQueue) {
        let queue = EventQueue(capacity: backlog)
        let id = state.withLockedValue { s -> Int in
            s.next += 1
            s.subscribers[job, default: [:]][s.next] = queue
            return s.next
        }
        return (id, queue)
    }

    public func unsubscribe(job: String, id: Int) {
        state.withLockedValue { s in
            s.subscribers[job]?[id] = nil
            if s.subscribers[job]?.isEmpty == true { s.subscribers[job] = nil }
        }
    }

    public func publish(_ event: StoredEvent) {
        let queues = state.withLockedValue { $0.subscribers[event.jobID].map { Array($0.values) } ?? [] }
        for q in queues { q.push(event) }
    }
}

/// One SSE client's pending events.
public final class EventQueue: @unchecked Sendable {
    public enum Next: Sendable {
        case events([StoredEvent])
        case keepalive
        /// Overflowed (the client was too slow) or closed.
        case closed
    }

    private let lock = NIOLock()
    private var items: [StoredEvent] = []
    private var waiter: (token: Int, continuation: CheckedContinuation<Next, Never>)?
    private var token = 0
    private var closed = false
    let capacity: Int

    init(capacity: Int) { self.capacity = capacity }

    func push(_ event: StoredEvent) {
        let resume: (CheckedContinuation<Next, Never>, Next)? = lock.withLock {
            if closed { return nil }
            if let w = waiter {
                waiter = nil
                return (w.continuation, .events([event]))
            }
            if items.count >= capacity {
                closed = true
                items = []
                return nil
            }
            items.append(event)
            return nil
        }
        if let (c, v) = resume { c.resume(returning: v) }
    }

    /// Wakes a waiting client with `.keepalive` (called by the hub's ticker).
    func tick() {
        let w: CheckedContinuation<Next, Never>? = lock.withLock {
            defer { waiter = nil }
            return waiter?.continuation
        }
        w?.resume(returning: .keepalive)
    }

    /// Everything queued, or waits until there is something (or a keepalive tick).
    public func next() async -> Next {
        await withCheckedContinuation { (c: CheckedContinuation<Next, Never>) in
            let immediate: Next? = lock.withLock {
                if !items.isEmpty {
                    defer { items = [] }
                    return .events(items)
                }
                if closed { return .closed }
                token += 1
                waiter = (token, c)
                return nil
            }
            if let immediate { c.resume(returning: immediate) }
        }
    }
}
