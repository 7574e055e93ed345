import NIOConcurrencyHelpers
import NIOCore

/// Fans stored events out to live SSE clients. Each event is encoded once (`SSEFrame`) and handed
/// to the clients' event loops with one hop per loop, not one per client; each client's stream
/// runs on its own loop (`EventLoopExecutor`), so delivery to the socket crosses no more threads.
///
/// Each client has a bounded queue; a client that falls behind it is cut off (its queue closes) so
/// one slow reader never slows the relay or the others — it reconnects with Last-Event-ID and
/// continues from the store. Clients take everything queued at once, so under load one socket
/// write carries many events instead of one write per event.
public final class EventHub: Sendable {
    /// A job's subscribers, grouped by the event loop their streams run on.
    private struct Loop {
        let eventLoop: any EventLoop
        var queues: [Int: EventQueue] = [:]
    }

    private struct State {
        var next = 0
        var jobs: [String: [ObjectIdentifier: Loop]] = [:]
        var count = 0
    }

    private let state = NIOLockedValueBox(State())
    let backlog: Int

    public init(backlog: Int) { self.backlog = backlog }

    /// One ticker for all clients (not a timer per client): every `interval`, clients waiting for
    /// events are woken to send an SSE keepalive comment.
    public func runKeepalive(interval: Duration) async {
        while !Task.isCancelled {
            try? await Task.sleep(for: interval)
            let queues = state.withLockedValue { $0.jobs.values.flatMap { $0.values.flatMap { Array($0.queues.values) } } }
            for q in queues { q.tick() }
        }
    }

    public var clientCount: Int { state.withLockedValue { $0.count } }

    /// Live events of `job` from now on, delivered on `eventLoop`; call `unsubscribe` when done.
    public func subscribe(job: String, on eventLoop: any EventLoop) -> (id: Int, queue: EventQueue) {
        let queue = EventQueue(capacity: backlog)
        let id = state.withLockedValue { s -> Int in
            s.next += 1
            s.count += 1
            s.jobs[job, default: [:]][ObjectIdentifier(eventLoop), default: Loop(eventLoop: eventLoop)].queues[s.next] = queue
            return s.next
        }
        return (id, queue)
    }

    public func unsubscribe(job: String, id: Int) {
        state.withLockedValue { s in
            guard var loops = s.jobs[job],
                  let key = loops.first(where: { $0.value.queues[id] != nil })?.key else { return }
            loops[key]?.queues[id] = nil
            s.count -= 1
            if loops[key]?.queues.isEmpty == true { loops[key] = nil }
            s.jobs[job] = loops.isEmpty ? nil : loops
        }
    }

    public func publish(_ event: StoredEvent) {
        let targets: [(any EventLoop, [EventQueue])] = state.withLockedValue { s in
            guard let loops = s.jobs[event.jobID] else { return [] }
            return loops.values.map { ($0.eventLoop, Array($0.queues.values)) }
        }
        guard !targets.isEmpty else { return }
        let frame = SSEFrame(event)
        for (eventLoop, queues) in targets {
            eventLoop.execute { for q in queues { q.push(frame) } }
        }
    }
}

/// One SSE client's pending events.
public final class EventQueue: @unchecked Sendable {
    public enum Next: Sendable {
        case events([SSEFrame])
        case keepalive
        /// Overflowed (the client was too slow) or closed.
        case closed
    }

    private let lock = NIOLock()
    private var items: [SSEFrame] = []
    private var waiter: CheckedContinuation<Next, Never>?
    private var closed = false
    let capacity: Int

    init(capacity: Int) { self.capacity = capacity }

    func push(_ frame: SSEFrame) {
        let resume: CheckedContinuation<Next, Never>? = lock.withLock {
            if closed { return nil }
            if let w = waiter {
                waiter = nil
                return w
            }
            if items.count >= capacity {
                closed = true
                items = []
                return nil
            }
            items.append(frame)
            return nil
        }
        resume?.resume(returning: .events([frame]))
    }

    /// Wakes a waiting client with `.keepalive` (called by the hub's ticker).
    func tick() {
        let w: CheckedContinuation<Next, Never>? = lock.withLock {
            defer { waiter = nil }
            return waiter
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
                waiter = c
                return nil
            }
            if let immediate { c.resume(returning: immediate) }
        }
    }
}
