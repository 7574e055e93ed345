import NIOConcurrencyHelpers

/// The buffer between the connection's event loop and a subscription's consumer.
///
/// A consumer that is waiting is handed messages directly; otherwise they accumulate and the
/// consumer takes the whole backlog in one lock acquisition, so a busy subscription costs one
/// wake-up per batch instead of one per message (what `AsyncStream` would cost).
// @unchecked: every mutable field is accessed with `lock` held.
final class MessageQueue: @unchecked Sendable {
    private let lock = NIOLock()
    private var buffer: [BusMessage] = []
    private var waiters: [CheckedContinuation<[BusMessage]?, Never>] = []
    private var finished = false
    /// Called once if a waiting consumer is cancelled (the subscription is then removed).
    var onCancel: (@Sendable () -> Void)?

    func push(_ message: BusMessage) {
        let waiter: CheckedContinuation<[BusMessage]?, Never>? = lock.withLock {
            guard !finished else { return nil }
            if !waiters.isEmpty { return waiters.removeFirst() }
            buffer.append(message)
            return nil
        }
        waiter?.resume(returning: [message])
    }

    /// Ends the sequence after what is buffered.
    func finish() {
        let waiting: [CheckedContinuation<[BusMessage]?, Never>] = lock.withLock {
            finished = true
            defer { waiters = [] }
            return waiters
        }
        for w in waiting { w.resume(returning: nil) }
    }

    /// The next batch, or nil once finished and drained (or cancelled).
    func take() async -> [BusMessage]? {
        await withTaskCancellationHandler {
            await withCheckedContinuation { (continuation: CheckedContinuation<[BusMessage]?, Never>) in
                let ready: [BusMessage]?? = lock.withLock {
                    if !buffer.isEmpty {
                        defer { buffer = [] }
                        return .some(buffer)
                    }
                    if finished || Task.isCancelled { return .some(nil) }
                    waiters.append(continuation)
                    return .none
                }
                if let ready { continuation.resume(returning: ready) }
            }
        } onCancel: {
            let callback: (@Sendable () -> Void)? = lock.withLock {
                defer { onCancel = nil }
                return onCancel
            }
            finish()
            callback?()
        }
    }
}
