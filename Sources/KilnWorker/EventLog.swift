import Foundation
import KilnBusClient
import KilnMessages
import Logging

/// The worker's event stream for its one job: numbered from `firstSeq` (1, or after an earlier
/// attempt's events), published as they happen, kept until
/// the gateway has acknowledged them (a `replay` re-sends from any seq), so a gateway restart loses
/// nothing.
public actor EventLog {
    public let jobID: String
    public let workerID: String
    let client: BusClient
    let logger: Logger
    public private(set) var events: [BuildEvent] = []
    public private(set) var ackedThrough: Int
    /// The seq of this attempt's first event.
    public let firstSeq: Int
    private var ackWaiters: [(seq: Int, continuation: CheckedContinuation<Void, Never>)] = []

    /// `firstSeq` outside 1…2^40 (a request from the network) is taken as 1.
    public init(jobID: String, workerID: String, client: BusClient, logger: Logger, firstSeq: Int = 1) {
        self.jobID = jobID
        self.workerID = workerID
        self.client = client
        self.logger = logger
        self.firstSeq = (1...(1 << 40)).contains(firstSeq) ? firstSeq : 1
        ackedThrough = self.firstSeq - 1
    }

    private var nextSeq: Int { firstSeq + events.count }

    /// Appends and publishes an event; returns its seq.
    @discardableResult
    public func emit(_ type: BuildEvent.Kind, _ configure: (inout BuildEvent) -> Void = { _ in }) async -> Int {
        var event = BuildEvent(jobID: jobID, seq: nextSeq, type: type)
        event.workerID = workerID
        configure(&event)
        events.append(event)
        await publish(event)
        if type != .log && type != .heartbeat {
            logger.info("event \(type.rawValue)", metadata: ["job_id": "\(jobID)", "seq": "\(event.seq)"])
        }
        return event.seq
    }

    /// Emits every line `batcher` holds as `log` events and then, if given, one more event — their
    /// sequence numbers taken in one step, so no line can land after the phase or terminal event that
    /// follows it, whichever task was shipping logs at the time.
    public func flushLogs(_ batcher: LogBatcher, then type: BuildEvent.Kind? = nil, _ configure: (inout BuildEvent) -> Void = { _ in }) async {
        var pending: [BuildEvent] = []
        for batch in batcher.drain() {
            var event = BuildEvent(jobID: jobID, seq: nextSeq, type: .log)
            event.workerID = workerID
            event.stream = batch.stream
            event.lines = batch.lines
            events.append(event)
            pending.append(event)
        }
        if let type {
            var event = BuildEvent(jobID: jobID, seq: nextSeq, type: type)
            event.workerID = workerID
            configure(&event)
            events.append(event)
            pending.append(event)
            logger.info("event \(type.rawValue)", metadata: ["job_id": "\(jobID)", "seq": "\(event.seq)"])
        }
        for event in pending { await publish(event) }
    }

    public var terminal: BuildEvent? { events.last.flatMap { $0.type.isTerminal ? $0 : nil } }

    private func publish(_ event: BuildEvent) async {
        do { try await client.publish(Subjects.events(jobID, worker: workerID), payload: event.encoded()) } catch {
            // Kept in `events`; the gateway asks for a replay when it sees the gap.
            logger.warning("cannot publish event \(event.seq): \(error)", metadata: ["job_id": "\(jobID)"])
        }
    }

    /// Re-sends events from seq `from` on.
    public func replay(from: Int) async {
        let start = max(0, from - firstSeq)
        guard start < events.count else { return }
        logger.info("replaying events from \(firstSeq + start)", metadata: ["job_id": "\(jobID)"])
        for event in events[start...] { await publish(event) }
    }

    public func acknowledge(through seq: Int) {
        ackedThrough = max(ackedThrough, seq)
        let ready = ackWaiters.filter { $0.seq <= ackedThrough }
        ackWaiters.removeAll { $0.seq <= ackedThrough }
        for w in ready { w.continuation.resume() }
    }

    /// Waits until `seq` is acknowledged; re-publishes the tail every `resendEvery` meanwhile (the
    /// gateway may have been down). Returns false after `timeout`.
    public func waitForAck(of seq: Int, timeout: Duration, resendEvery: Duration = .seconds(5)) async -> Bool {
        let deadline = ContinuousClock.now + timeout
        while ackedThrough < seq {
            if ContinuousClock.now >= deadline { return false }
            let acked = await withTaskGroup(of: Bool.self) { group in
                group.addTask {
                    await self.waitForAckSignal(seq)
                    return true
                }
                group.addTask {
                    try? await Task.sleep(for: resendEvery)
                    return false
                }
                let first = await group.next() ?? false
                group.cancelAll()
                return first
            }
            if acked || ackedThrough >= seq { return true }
            await replay(from: ackedThrough + 1)
        }
        return true
    }

    private func waitForAckSignal(_ seq: Int) async {
        if ackedThrough >= seq { return }
        await withTaskCancellationHandler {
            await withCheckedContinuation { continuation in
                ackWaiters.append((seq, continuation))
            }
        } onCancel: {
            Task { await self.releaseWaiters() }
        }
    }

    /// Wakes waiters whose task gave up (the wait loop re-checks the ack state).
    private func releaseWaiters() {
        let all = ackWaiters
        ackWaiters.removeAll()
        for w in all { w.continuation.resume() }
    }
}
