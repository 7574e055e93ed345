import KilnBus
import KilnCore
import Logging
import NIOConcurrencyHelpers
import NIOCore
import NIOPosix
import NIOSSL

/// An async/await client for the Kiln bus (design §2).
///
/// Publishing never blocks on the network: frames are batched in an `OutboundBuffer` and written by
/// one flush per event-loop turn; a publisher only waits when the backlog passes `pendingLimit`.
/// If the connection drops, the client reconnects with exponential backoff and re-subscribes every
/// live subscription (a `max` subscription is renewed only for its remaining deliveries; spent
/// one-shots are gone for good), then sends what was queued meanwhile.
// @unchecked: the mutable state (state machine, channel, deadline timer, reconnect task) is
// accessed with `lock` held only; everything else is immutable or Sendable.
public final class BusClient: @unchecked Sendable {
    typealias StateMachine = BusClientStateMachine<
        MessageQueue, CheckedContinuation<Void, any Error>, CheckedContinuation<BusMessage, any Error>
    >

    public let configuration: Configuration
    let logger: Logger
    let group: any EventLoopGroup
    let outbound: OutboundBuffer
    private let lock = NIOLock()
    // Everything below is guarded by `lock`.
    private var machine = StateMachine()
    private var channel: (any Channel)?
    /// One timer for every request and flush deadline: armed for the machine's earliest.
    private var deadlineTimer: (deadline: NIODeadline, task: Scheduled<Void>)?
    private var reconnectTask: Task<Void, Never>?
    /// The largest frame the connected broker accepts (from its greeting).
    private var serverMaxFrame: Int?
    /// How bytes look on the wire; everything else in the client is protocol-neutral.
    let wire: any BusWireProtocol
    private let inboxPrefix: String
    private let errorContinuation: AsyncStream<BusError>.Continuation
    /// `err` frames the broker sent that were not part of a handshake (e.g. permission denied).
    public let asyncErrors: AsyncStream<BusError>

    init(configuration: Configuration, logger: Logger, group: any EventLoopGroup, wire: any BusWireProtocol = KilnWireProtocol()) {
        self.configuration = configuration
        self.wire = wire
        self.logger = logger
        self.group = group
        self.outbound = OutboundBuffer(lowWater: configuration.pendingLimit / 2)
        var rng = SystemRandomNumberGenerator()
        let r1 = rng.next()
        let r2 = rng.next()
        self.inboxPrefix = "_INBOX." + (configuration.inboxNamespace.map { $0 + "." } ?? "") + String(r1, radix: 36) + String(r2, radix: 36)
        (asyncErrors, errorContinuation) = AsyncStream.makeStream(bufferingPolicy: .bufferingNewest(256))
    }

    /// Connects, completes the `info`/`connect` handshake (a `ping` round trip proves auth passed).
    public static func connect(
        _ configuration: Configuration, logger: Logger = Logger(label: "kiln.bus"),
        group: any EventLoopGroup = MultiThreadedEventLoopGroup.singleton
    ) async throws -> BusClient {
        let client = BusClient(configuration: configuration, logger: logger, group: group)
        do {
            try await client.establish()
        } catch {
            await client.close()
            throw error
        }
        return client
    }

    public var isConnected: Bool { lock.withLock { machine.status == .connected } }

    /// The broker's `max_frame` (from `info`).
    public var maxFrame: Int { lock.withLock { serverMaxFrame ?? wire.defaultMaxFrame } }

    // MARK: - publish / subscribe

    /// Publishes `payload` to `subject`. Returns once queued; waits only under back-pressure.
    public func publish<Payload: Collection & Sendable>(
        _ subject: String, payload: Payload, reply: String? = nil,
        headers: [String: String]? = nil
    ) async throws
    where Payload.Element == UInt8 {
        let backlog =
            try payload.withContiguousStorageIfAvailable { bytes in
                try enqueuePublish(subject, payload: UnsafeRawBufferPointer(bytes), reply: reply, headers: headers)
            } ?? Array(payload).withUnsafeBytes { try enqueuePublish(subject, payload: $0, reply: reply, headers: headers) }
        if backlog > configuration.pendingLimit {
            try await outbound.waitForRoom()
        }
    }

    public func publish(
        _ subject: String, payload: ByteBuffer, reply: String? = nil,
        headers: [String: String]? = nil
    ) async throws {
        let backlog = try payload.withUnsafeReadableBytes { try enqueuePublish(subject, payload: $0, reply: reply, headers: headers) }
        if backlog > configuration.pendingLimit {
            try await outbound.waitForRoom()
        }
    }

    /// The non-generic core of `publish`: validates, encodes straight into the outbound buffer unless
    /// the frame would exceed the broker's `max_frame`; returns the backlog in bytes.
    private func enqueuePublish(_ subject: String, payload: UnsafeRawBufferPointer, reply: String?, headers: [String: String]?) throws -> Int {
        try Subject.validatePublish(subject)
        let max = maxFrame
        let wire = self.wire
        var tooLarge = 0
        let result = outbound.enqueue { buffer in
            let start = buffer.writerIndex
            let size = wire.writePublish(subject: subject, reply: reply, headers: headers, payload: payload, to: &buffer)
            if size > max {
                tooLarge = size
                buffer.moveWriterIndex(to: start)
            }
        }
        if tooLarge > 0 { throw BusClientError.frameTooLarge(size: tooLarge, max: max) }
        switch result {
        case .closed: throw BusClientError.closed
        case .queued(let backlog): return backlog
        }
    }

    public func publish(_ subject: String, string: String, reply: String? = nil, headers: [String: String]? = nil) async throws {
        try await publish(subject, payload: Array(string.utf8), reply: reply, headers: headers)
    }

    /// Subscribes to `subject` (wildcards allowed). `queue` joins a queue group; `max` makes the
    /// subscription end by itself after that many messages (`max: 1` = one-shot).
    public func subscribe(_ subject: String, queue: String? = nil, max: Int? = nil) throws -> BusSubscription {
        try Subject.validateSubscription(subject)
        if let max, max <= 0 { throw BusError.badRequest("'max' must be a positive integer") }
        let messages = MessageQueue()
        let sid: String = try lock.withLock {
            let (sid, command) = try machine.subscribe(subject: subject, queue: queue, max: max, subscriber: messages)
            if let command { send(command) }  // while (re)connecting, the handshake sends it
            return sid
        }
        let client = self
        messages.onCancel = { Task { try? await client.unsubscribe(sid: sid, max: nil) } }
        return BusSubscription(sid: sid, subject: subject, queue: queue, max: max, messages: messages, client: self)
    }

    func unsubscribe(sid: String, max: Int?) async throws {
        let finished: MessageQueue? = try lock.withLock {
            switch try machine.unsubscribe(sid: sid, max: max) {
            case .none:
                return nil
            case .limit(let command):
                if let command { send(command) }
                return nil
            case .finish(let messages, let command):
                if let command { send(command) }
                return messages
            }
        }
        finished?.finish()
    }

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

    private func finishRequest(_ token: some StringProtocol, with result: Result<BusMessage, any Error>) {
        lock.withLock { machine.finishRequest(token: token) }?.resume(with: result)
    }

    // MARK: - deadlines

    /// Makes sure the timer fires by `next` (a new waiter's deadline: O(1) on the request path; the
    /// timer computes the machine's earliest when it fires). Call with `lock` held.
    private func armDeadlineTimer(for next: NIODeadline?) {
        guard let next else { return }
        if let current = deadlineTimer, current.deadline <= next { return }
        deadlineTimer?.task.cancel()
        let task = group.any().scheduleTask(deadline: next) { [weak self] () -> Void in self?.deadlinePassed() }
        deadlineTimer = (next, task)
    }

    /// The timer fired: fail what is overdue, re-arm for what is left.
    private func deadlinePassed() {
        let expired = lock.withLock {
            deadlineTimer = nil
            let expired = machine.expire(now: .now())
            armDeadlineTimer(for: machine.nextDeadline)
            return expired
        }
        for (requester, subject) in expired.requests { requester.resume(throwing: BusClientError.timeout(subject: subject)) }
        for waiter in expired.pongs { waiter.resume(throwing: BusClientError.flushTimeout) }
    }

    // MARK: - shutdown

    /// Unsubscribes everything, waits until the broker has processed it, then closes.
    public func drain(timeout: TimeAmount = .seconds(5)) async {
        let sids: [String] = lock.withLock { machine.sids }
        for sid in sids { try? await unsubscribe(sid: sid, max: nil) }
        try? await flush(timeout: timeout)
        await close()
    }

    /// Closes at once: streams end, waiters fail with `.closed`.
    public func close() async {
        let (channel, subs, waiters, requesters, task):
            (
                (any Channel)?, [MessageQueue], [CheckedContinuation<Void, any Error>], [CheckedContinuation<BusMessage, any Error>],
                Task<Void, Never>?
            ) = lock.withLock {
                let (subscribers, waiters, requesters) = machine.close()
                let result = (self.channel, subscribers, waiters, requesters, reconnectTask)
                deadlineTimer?.task.cancel()
                deadlineTimer = nil
                self.channel = nil
                reconnectTask = nil
                return result
            }
        task?.cancel()
        if let channel {
            // Let what was queued go out first.
            let pending = outbound.close()
            if let pending { try? await channel.writeAndFlush(pending) }
            try? await channel.close()
        } else {
            outbound.close()
        }
        for s in subs { s.finish() }
        for w in waiters { w.resume(throwing: BusClientError.closed) }
        for r in requesters { r.resume(throwing: BusClientError.closed) }
        errorContinuation.finish()
    }

    // MARK: - connection management

    /// Opens a connection and completes the handshake; on success the channel becomes current.
    func establish() async throws {
        let handler = BusClientHandler(client: self, wire: wire)
        let tlsContext: NIOSSLContext?
        do { tlsContext = try configuration.tls.map { try $0.makeContext() } } catch {
            throw BusClientError.connectFailed("TLS set-up for \(configuration.host): \(error)")
        }
        // SNI and hostname checks take a name; for an IP address NIOSSL checks the certificate's IP SANs.
        let serverHostname = configuration.host.allSatisfy({ $0.isNumber || $0 == "." || $0 == ":" }) ? nil : configuration.host
        let bootstrap = ClientBootstrap(group: group)
            .connectTimeout(configuration.connectTimeout)
            .channelOption(.socketOption(.tcp_nodelay), value: 1)
            .channelOption(.writeBufferWaterMark, value: .init(low: 256 * 1024, high: 1024 * 1024))
            .channelInitializer { channel in
                channel.eventLoop.makeCompletedFuture {
                    if let tlsContext {
                        try channel.pipeline.syncOperations.addHandler(try NIOSSLClientHandler(context: tlsContext, serverHostname: serverHostname))
                    }
                    try channel.pipeline.syncOperations.addHandler(handler)
                }
            }
        let channel: any Channel
        do {
            channel = try await bootstrap.connect(host: configuration.host, port: configuration.port).get()
        } catch {
            throw BusClientError.connectFailed("\(configuration.host):\(configuration.port): \(error)")
        }
        do {
            let timeout = channel.eventLoop.scheduleTask(in: configuration.connectTimeout) {
                handler.failHandshake(BusClientError.connectFailed("handshake timed out"))
            }
            defer { timeout.cancel() }
            let announcedMaxFrame = try await handler.hello.futureResult.get()
            let thisGeneration: Int = try lock.withLock {
                let (generation, resubscribe) = try machine.connectionEstablished()
                serverMaxFrame = announcedMaxFrame
                handler.generation = generation
                var hello = ByteBuffer()
                wire.writeGreeting(configuration, to: &hello)
                // Re-subscribe what is still live, for its remaining deliveries only.
                for command in resubscribe { wire.write(command, to: &hello) }
                wire.write(.ping, to: &hello)
                channel.writeAndFlush(hello, promise: nil)
                self.channel = channel
                outbound.attach(channel)
                return generation
            }
            try await handler.handshakePong.futureResult.get()
            logger.debug("connected", metadata: ["broker": "\(configuration.host):\(configuration.port)", "generation": "\(thisGeneration)"])
        } catch {
            // A flush issued between `status = .connected` and the handshake's pong waits on this
            // channel; it must fail now rather than be answered by a later connection's pong.
            let stranded: [CheckedContinuation<Void, any Error>] = lock.withLock {
                guard self.channel === channel else { return [] }
                self.channel = nil
                outbound.detach()
                return machine.handshakeFailed(generation: handler.generation)
            }
            for waiter in stranded { waiter.resume(throwing: BusClientError.connectionLost) }
            channel.close(promise: nil)
            if let e = error as? BusClientError { throw e }
            throw BusClientError.connectFailed("\(error)")
        }
    }

    /// The current channel closed.
    func connectionLost(generation lost: Int) {
        let action: StateMachine.LossAction = lock.withLock {
            let action = machine.connectionLost(generation: lost, reconnect: configuration.reconnect)
            if case .ignore = action { return action }
            channel = nil
            outbound.detach()
            return action
        }
        switch action {
        case .ignore:
            break
        case .reconnect(let waiters):
            for w in waiters { w.resume(throwing: BusClientError.connectionLost) }
            logger.info("connection to broker lost; reconnecting")
            // Tracked in `reconnectTask` and cancelled by `close()`.
            let task = Task { await self.reconnectLoop() }
            lock.withLock {
                if machine.status == .reconnecting { reconnectTask = task } else { task.cancel() }
            }
        case .close(let waiters):
            for w in waiters { w.resume(throwing: BusClientError.connectionLost) }
            Task { await self.close() }
        }
    }

    private func reconnectLoop() async {
        var backoff = Backoff(
            initial: .nanoseconds(configuration.reconnectInitialDelay.nanoseconds),
            maximum: .nanoseconds(configuration.reconnectMaxDelay.nanoseconds),
            maxAttempts: configuration.maxReconnectAttempts)
        while !Task.isCancelled {
            if lock.withLock({ machine.status == .closed }) { return }
            try? await Task.sleep(for: backoff.nextDelay())
            if Task.isCancelled { return }
            do {
                try await establish()
                logger.info("reconnected to broker")
                lock.withLock { reconnectTask = nil }
                return
            } catch {
                logger.debug("reconnect attempt \(backoff.attempts + 1) failed: \(error)")
                if !backoff.attemptFailed() {
                    logger.warning("giving up reconnecting after \(backoff.attempts) attempts")
                    await close()
                    return
                }
            }
        }
    }

    /// Queues a state-machine command for the broker. Call with `lock` held (the order of commands is
    /// the order of state changes).
    private func send(_ command: BusCommand) {
        let wire = self.wire
        outbound.enqueue { wire.write(command, to: &$0) }
    }

    // MARK: - inbound (called on the channel's event loop by BusClientHandler)

    func received(_ inbound: BusInbound) {
        switch inbound {
        case .message(let sid, let message):
            if sid == StateMachine.inboxSID {
                if let dot = message.subject.lastIndex(of: ".") {
                    finishRequest(message.subject[message.subject.index(after: dot)...], with: .success(message))
                }
                return
            }
            switch lock.withLock({ machine.messageArrived(sid: sid) }) {
            case .drop:
                break
            case .deliver(let queue):
                queue.push(message)
            case .deliverAndFinish(let queue):
                queue.push(message)
                queue.finish()
            }
        case .pong:
            lock.withLock { machine.pongArrived() }?.resume()
        case .error(let error):
            logger.warning("broker error \(error.code): \(error.message)")
            errorContinuation.yield(error)
        case .hello(let maxFrame):
            lock.withLock { serverMaxFrame = maxFrame }
        case .ping, .ignored:
            break
        }
    }
}
