import KilnBus
import NIOCore

/// Flushes and request/reply: each waiter is registered in the state machine with its deadline, and one
/// event-loop timer, armed for the earliest deadline, fails whatever is overdue.
extension BusClient {
    /// Round trip to the broker: when it returns, everything sent before has been processed by the
    /// broker (subscriptions are live, publishes routed).
    public func flush(timeout: TimeAmount = .seconds(5)) async throws {
        let deadline = NIODeadline.now() + timeout
        try await withCheckedThrowingContinuation { (continuation: CheckedContinuation<Void, any Error>) in
            let failure: BusClientError? = lock.withLock {
                switch machine.ping(continuation, deadline: deadline) {
                case .success(let command):
                    send(command)
                    armDeadlineTimer(for: deadline)
                    return nil
                case .failure(let error):
                    return error
                }
            }
            if let failure { continuation.resume(throwing: failure) }
        }
    }

    /// Sends a request and waits for the first reply.
    /// - Throws: `BusClientError.noResponders` at once if nobody is subscribed, `.timeout` after `timeout`.
    public func request<Payload: Collection & Sendable>(
        _ subject: String, payload: Payload, headers: [String: String]? = nil,
        timeout: TimeAmount = .seconds(5)
    ) async throws -> BusMessage
    where Payload.Element == UInt8 {
        try Subject.validatePublish(subject)
        let token = lock.withLock { machine.makeRequestToken() }
        let deadline = NIODeadline.now() + timeout
        let message: BusMessage = try await withTaskCancellationHandler {
            try await withCheckedThrowingContinuation { (continuation: CheckedContinuation<BusMessage, any Error>) in
                do {
                    try lock.withLock {
                        let command = try machine.startRequest(
                            token: token, subject: subject, requester: continuation, deadline: deadline,
                            inbox: inboxPrefix + ".*", inboxSubscriber: { MessageQueue() })
                        if let command { send(command) }
                        armDeadlineTimer(for: deadline)
                    }
                } catch {
                    continuation.resume(throwing: error)
                    return
                }
                // Cancelled before the request was registered: the cancellation handler found nothing.
                if Task.isCancelled { return finishRequest(token, with: .failure(CancellationError())) }
                do {
                    let reply = inboxPrefix + "." + token
                    _ =
                        try payload.withContiguousStorageIfAvailable { bytes in
                            try enqueuePublish(subject, payload: UnsafeRawBufferPointer(bytes), reply: reply, headers: headers)
                        } ?? Array(payload).withUnsafeBytes { try enqueuePublish(subject, payload: $0, reply: reply, headers: headers) }
                } catch {
                    finishRequest(token, with: .failure(error))
                }
            }
        } onCancel: {
            self.finishRequest(token, with: .failure(CancellationError()))
        }
        if message.status == "503" { throw BusClientError.noResponders(subject: subject) }
        return message
    }

    func finishRequest(_ token: some StringProtocol, with result: Result<BusMessage, any Error>) {
        lock.withLock { machine.finishRequest(token: token) }?.resume(with: result)
    }

    // MARK: - deadlines

    /// Makes sure the timer fires by `next` (a new waiter's deadline: O(1) on the request path; the
    /// timer computes the machine's earliest when it fires). Call with `lock` held.
    func armDeadlineTimer(for next: NIODeadline?) {
        guard let next else { return }
        if let current = deadlineTimer, current.deadline <= next { return }
        deadlineTimer?.task.cancel()
        let task = group.any().scheduleTask(deadline: next) { [weak self] () -> Void in self?.deadlinePassed() }
        deadlineTimer = (next, task)
    }

    /// The timer fired: fail what is overdue, re-arm for what is left.
    func deadlinePassed() {
        let expired = lock.withLock {
            deadlineTimer = nil
            let expired = machine.expire(now: .now())
            armDeadlineTimer(for: machine.nextDeadline)
            return expired
        }
        for (requester, subject) in expired.requests { requester.resume(throwing: BusClientError.timeout(subject: subject)) }
        for waiter in expired.pongs { waiter.resume(throwing: BusClientError.flushTimeout) }
    }
}
