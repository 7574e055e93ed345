import KilnCoordination
import KilnJobs
import NIOConcurrencyHelpers
import NIOCore

/// Fans stored events out to live SSE streams. Each event is encoded once (`SSEFrame`) and handed
/// to the streams' event loops with one hop per loop, not one per client; there each stream's
/// `SSERelay` writes it into its connection. A relay that cannot keep up cuts its client off (it
/// reconnects with Last-Event-ID and continues from the store), so one slow reader never slows
/// the relay or the others.
public final class EventHub: LiveEventFanOut {
    /// A job's streams, grouped by the event loop their connections run on.
    private struct Loop {
        let eventLoop: any EventLoop
        var relays: [Int: SSERelay] = [:]
    }

    private struct State {
        var next = 0
        var jobs: [String: [ObjectIdentifier: Loop]] = [:]
        var count = 0
    }

    private let state = NIOLockedValueBox(State())

    public init() {}

    /// One ticker for all streams (not a timer per client): every `interval`, each live stream
    /// sends an SSE keepalive comment.
    public func runKeepalive(interval: Duration) async {
        while !Task.isCancelled {
            try? await Task.sleep(for: interval)
            sendKeepalives()
        }
    }

    /// One keepalive comment to every live stream (each on its own event loop).
    public func sendKeepalives() {
        for (eventLoop, relays) in targets(nil) {
            eventLoop.execute { for r in relays { r.keepalive() } }
        }
    }

    public var clientCount: Int { state.withLockedValue { $0.count } }

    /// Whether any live stream follows `job`.
    public func hasClients(job: String) -> Bool { state.withLockedValue { $0.jobs[job] != nil } }

    /// The jobs live streams follow right now.
    public func followedJobs() -> [String] { state.withLockedValue { Array($0.jobs.keys) } }

    /// Live events of `job` go to `relay` from now on; call `unsubscribe` when the stream ends.
    public func subscribe(job: String, relay: SSERelay, on eventLoop: any EventLoop) -> Int {
        state.withLockedValue { s -> Int in
            s.next += 1
            s.count += 1
            s.jobs[job, default: [:]][ObjectIdentifier(eventLoop), default: Loop(eventLoop: eventLoop)].relays[s.next] = relay
            return s.next
        }
    }

    public func unsubscribe(job: String, id: Int) {
        state.withLockedValue { s in
            guard var loops = s.jobs[job],
                let key = loops.first(where: { $0.value.relays[id] != nil })?.key
            else { return }
            loops[key]?.relays[id] = nil
            s.count -= 1
            if loops[key]?.relays.isEmpty == true { loops[key] = nil }
            s.jobs[job] = loops.isEmpty ? nil : loops
        }
    }

    public func publish(_ event: StoredEvent) {
        let targets = targets(event.jobID)
        guard !targets.isEmpty else { return }
        let frame = SSEFrame(event)
        for (eventLoop, relays) in targets {
            eventLoop.execute { for r in relays { r.deliver(frame) } }
        }
    }

    /// The streams of `job` (all jobs if nil), per event loop.
    private func targets(_ job: String?) -> [(any EventLoop, [SSERelay])] {
        state.withLockedValue { s in
            let loops = job.map { s.jobs[$0].map { Array($0.values) } ?? [] } ?? s.jobs.values.flatMap(\.values)
            return loops.map { ($0.eventLoop, Array($0.relays.values)) }
        }
    }
}
