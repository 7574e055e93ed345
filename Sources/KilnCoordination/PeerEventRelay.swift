import KilnBusClient
import KilnJobs
import KilnMessages

/// Relays events of jobs another gateway ingests to this gateway's SSE clients. The ingesting gateway
/// announces each stored event on `kiln.gateway.stored.<job>`; here, for a job this gateway has
/// clients for, the events after the last one relayed are read from the shared store and published
/// to the hub in order. The notice is only a hint: what clients see is what the store holds, so a
/// forged or duplicated notice costs one read at most, never a false event. Reads for one job are
/// coalesced (notices arriving during a read extend it).
///
/// Notices can be lost — the ingesting gateway announces only to gateways it has seen heartbeat, and a
/// bus member can die with a notice in flight — so `catchUp` also reads, about once a second, every
/// followed job that has been quiet: a lost notice delays an event by that much, never strands a stream.
actor PeerEventRelay {
    static let gatewayHeader = "kiln-gateway"

    private struct Follow {
        var relayed: Int
        var wanted: Int
        var reading = false
        var lastRead: ContinuousClock.Instant = .now
    }

    private let hub: any LiveEventFanOut
    private let store: any JobStore
    private var follows: [String: Follow] = [:]

    init(hub: any LiveEventFanOut, store: any JobStore) {
        self.hub = hub
        self.store = store
    }

    func noticed(_ message: BusMessage, ownGateway: String) async {
        guard message.headers?[Self.gatewayHeader] != ownGateway else { return }
        let parts = message.subject.split(separator: ".", omittingEmptySubsequences: false)
        guard parts.count == 4, Subjects.isValidToken(String(parts[3])), message.payload.readableBytes <= 20,
            let seq = Int(String(decoding: message.payloadBytes, as: UTF8.self)), seq > 0
        else { return }
        await noticed(job: String(parts[3]), seq: seq)
    }

    /// Event `seq` of `job` is in the store.
    func noticed(job: String, seq: Int) async {
        guard hub.hasClients(job: job) else {
            follows[job] = nil
            return
        }
        // A job newly followed here is read from its first event: where each client stands is its
        // relay's business (it skips what it has), and a notice missed earlier leaves no gap.
        var follow = follows[job] ?? Follow(relayed: 0, wanted: seq)
        guard seq > follow.relayed else { return }
        follow.wanted = max(follow.wanted, seq)
        guard !follow.reading else {
            follows[job] = follow
            return
        }
        follow.reading = true
        follows[job] = follow
        var ended = false
        while let current = follows[job], current.wanted > current.relayed, !ended {
            follows[job]?.lastRead = .now
            // A failed read is retried by the next notice or the once-a-second catch-up; the stream
            // waits meanwhile (its client sees no gap, only a delay).
            guard let events = try? await store.events(job: job, after: current.relayed), let last = events.last else { break }
            for event in events { hub.publish(event) }
            follows[job]?.relayed = last.seq
            ended = last.isTerminal
        }
        follows[job]?.reading = false
        if ended || follows.count > 10_000 { follows[job] = nil }
    }

    /// Reads each of `jobs` (followed here, ingested elsewhere) that has had no read for `quietFor`:
    /// what a lost notice would have brought.
    func catchUp(jobs: [String], quietFor: Duration) async {
        let now = ContinuousClock.now
        for job in jobs {
            let follow = follows[job]
            if let follow, follow.reading || now - follow.lastRead < quietFor { continue }
            await noticed(job: job, seq: (follow?.relayed ?? 0) + 1)
        }
    }
}
