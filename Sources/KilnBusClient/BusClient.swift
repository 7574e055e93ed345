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
// @unchecked: the mutable state (state machine, channel, deadline timer, reconnect task; internal for
// the extensions in BusClient+Connection and +RequestReply) is
// accessed with `lock` held only; everything else is immutable or Sendable.
public final class BusClient: @unchecked Sendable {
    typealias StateMachine = BusClientStateMachine<
        MessageQueue, CheckedContinuation<Void, any Error>, CheckedContinuation<BusMessage, any Error>
    >

    public let configuration: Configuration
    let logger: Logger
    let group: any EventLoopGroup
    let outbound: OutboundBuffer
    let lock = NIOLock()
    // Everything below is guarded by `lock`.
    var machine = StateMachine()
    var channel: (any Channel)?
    /// One timer for every request and flush deadline: armed for the machine's earliest.
    var deadlineTimer: (deadline: NIODeadline, task: Scheduled<Void>)?
    var reconnectTask: Task<Void, Never>?
    /// The largest frame the connected broker accepts (from its greeting).
    var serverMaxFrame: Int?
    /// Which of `configuration.members` the next connection attempt goes to.
    var serverCursor = 0
    /// How bytes look on the wire; everything else in the client is protocol-neutral.
    let wire: any BusWireProtocol
    let inboxPrefix: String
    let errorContinuation: AsyncStream<BusError>.Continuation
    /// `err` frames the broker sent that were not part of a handshake (e.g. permission denied).
    public let asyncErrors: AsyncStream<BusError>

    init(configuration: Configuration, logger: Logger, group: any EventLoopGroup, wire: (any BusWireProtocol)? = nil) {
        self.configuration = configuration
        self.wire = wire ?? (configuration.wireProtocol == .nats ? NATSWireProtocol() : KilnWireProtocol())
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
        // Each member once, in order: a cluster is reachable if any member is.
        for attempt in 0..<configuration.members.count {
            do {
                try await client.establish()
                return client
            } catch {
                if attempt == configuration.members.count - 1 || (error as? BusClientError).map(\.isAuthenticationFailure) == true {
                    await client.close()
                    throw error
                }
                client.advanceServer()
            }
        }
        return client
    }

    /// The member the next attempt connects to.
    var currentServer: Configuration.Server {
        let members = configuration.members
        return lock.withLock { members[serverCursor % members.count] }
    }

    /// The next attempt goes to the next member (a cluster's other servers after one is lost).
    func advanceServer() { lock.withLock { serverCursor &+= 1 } }

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
    func enqueuePublish(_ subject: String, payload: UnsafeRawBufferPointer, reply: String?, headers: [String: String]?) throws -> Int {
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
        // The subscription's consumer is gone; on a closed connection there is nothing to unsubscribe.
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

    // MARK: - shutdown

    /// Unsubscribes everything, waits until the broker has processed it, then closes.
    public func drain(timeout: TimeAmount = .seconds(5)) async {
        let sids: [String] = lock.withLock { machine.sids }
        // Draining: on a closed connection there is nothing to unsubscribe.
        for sid in sids { try? await unsubscribe(sid: sid, max: nil) }
        // Draining: a flush that cannot complete ends with the close below.
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
            // Already closed is the state wanted.
            try? await channel.close()
        } else {
            outbound.close()
        }
        for s in subs { s.finish() }
        for w in waiters { w.resume(throwing: BusClientError.closed) }
        for r in requesters { r.resume(throwing: BusClientError.closed) }
        errorContinuation.finish()
    }

}
