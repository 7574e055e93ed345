import KilnBus
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
public final class BusClient: @unchecked Sendable {
    public struct Configuration: Sendable {
        public var host: String
        public var port: Int
        /// Shown in the broker's logs.
        public var name: String?
        public var token: String?
        public var user: String?
        public var password: String?
        public var connectTimeout: TimeAmount
        public var reconnect: Bool
        public var reconnectInitialDelay: TimeAmount
        public var reconnectMaxDelay: TimeAmount
        /// Give up (and close) after this many failed attempts in a row; nil retries until `close()`.
        public var maxReconnectAttempts: Int?
        /// Publishers wait while more than this many bytes are queued (also bounds the reconnect buffer).
        public var pendingLimit: Int
        /// Inboxes live under `_INBOX.<namespace>.` (a worker uses its id, which its credential permits).
        public var inboxNamespace: String?
        /// TLS to the broker (`kilns://` or `tls://`); nil is plain TCP.
        public var tls: TLS?

        /// How to check the broker and, for mTLS, who this client is.
        public struct TLS: Sendable, Equatable {
            /// CA (PEM) the broker's certificate must chain to; nil uses the system's trust store.
            public var caFile: String?
            /// Client certificate chain and key (PEM) for brokers that require one.
            public var certificateFile: String?
            public var keyFile: String?

            public init(caFile: String? = nil, certificateFile: String? = nil, keyFile: String? = nil) {
                self.caFile = caFile
                self.certificateFile = certificateFile
                self.keyFile = keyFile
            }

            func makeContext() throws -> NIOSSLContext {
                var config = TLSConfiguration.makeClientConfiguration()
                config.minimumTLSVersion = .tlsv12
                if let caFile { config.trustRoots = .file(caFile) }
                if let certificateFile, let keyFile {
                    config.certificateChain = try NIOSSLCertificate.fromPEMFile(certificateFile).map { .certificate($0) }
                    config.privateKey = .privateKey(try NIOSSLPrivateKey(file: keyFile, format: .pem))
                }
                return try NIOSSLContext(configuration: config)
            }
        }

        public init(host: String = "127.0.0.1", port: Int = 4222, name: String? = nil, token: String? = nil,
                    user: String? = nil, password: String? = nil, connectTimeout: TimeAmount = .seconds(5),
                    reconnect: Bool = true, reconnectInitialDelay: TimeAmount = .milliseconds(50),
                    reconnectMaxDelay: TimeAmount = .seconds(2), maxReconnectAttempts: Int? = nil,
                    pendingLimit: Int = 8 << 20) {
            self.host = host
            self.port = port
            self.name = name
            self.token = token
            self.user = user
            self.password = password
            self.connectTimeout = connectTimeout
            self.reconnect = reconnect
            self.reconnectInitialDelay = reconnectInitialDelay
            self.reconnectMaxDelay = reconnectMaxDelay
            self.maxReconnectAttempts = maxReconnectAttempts
            self.pendingLimit = pendingLimit
        }

        /// Parses `kiln://[user:password@]host:port`, `tcp://host:port` or `host:port`;
        /// a `?token=…` query sets the token.
        public init(url: String) throws(BusClientError) {
            self.init()
            var rest = Substring(url)
            for scheme in ["kilns://", "tls://"] where rest.hasPrefix(scheme) {
                rest = rest.dropFirst(scheme.count)
                tls = TLS()
            }
            for scheme in ["kiln://", "tcp://", "nats://"] where rest.hasPrefix(scheme) { rest = rest.dropFirst(scheme.count) }
            if let q = rest.firstIndex(of: "?") {
                for pair in rest[rest.index(after: q)...].split(separator: "&") {
                    let kv = pair.split(separator: "=", maxSplits: 1)
                    if kv.count == 2, kv[0] == "token" { token = String(kv[1]) }
                }
                rest = rest[..<q]
            }
            if rest.hasSuffix("/") { rest = rest.dropLast() }
            if let at = rest.lastIndex(of: "@") {
                let cred = rest[..<at]
                let parts = cred.split(separator: ":", maxSplits: 1)
                if parts.count == 2 { user = String(parts[0]); password = String(parts[1]) } else { token = String(cred) }
                rest = rest[rest.index(after: at)...]
            }
            guard let colon = rest.lastIndex(of: ":"), let p = Int(rest[rest.index(after: colon)...]), p > 0, p < 65536 else {
                throw .connectFailed("bad broker URL '\(url)': expected kiln://host:port")
            }
            host = String(rest[..<colon])
            port = p
            if host.isEmpty { throw .connectFailed("bad broker URL '\(url)': empty host") }
        }
    }

    enum Status: Equatable { case connecting, connected, reconnecting, closed }

    struct SubscriptionState {
        var subject: String
        var queue: String?
        var max: Int?
        var delivered = 0
        var messages: MessageQueue
    }

    struct PendingRequest {
        var continuation: CheckedContinuation<BusMessage, any Error>
        var timeout: Scheduled<Void>?
        var subject: String
    }

    public let configuration: Configuration
    let logger: Logger
    let group: any EventLoopGroup
    let outbound: OutboundBuffer
    private let lock = NIOLock()
    private var status: Status = .connecting
    private var channel: (any Channel)?
    private var generation = 0
    private var subscriptions: [String: SubscriptionState] = [:]
    private var nextSid = 0
    private var pongWaiters: [CheckedContinuation<Void, any Error>] = []
    private var requests: [String: PendingRequest] = [:]
    private var nextRequest = 0
    private var inboxSid: String?
    private var reconnectTask: Task<Void, Never>?
    private(set) var serverInfo: BusHeader?
    private let inboxPrefix: String
    private let errorContinuation: AsyncStream<BusError>.Continuation
    /// `err` frames the broker sent that were not part of a handshake (e.g. permission denied).
    public let asyncErrors: AsyncStream<BusError>

    static let inboxSidName = "_inbox"

    init(configuration: Configuration, logger: Logger, group: any EventLoopGroup) {
        self.configuration = configuration
        self.logger = logger
        self.group = group
        self.outbound = OutboundBuffer(lowWater: configuration.pendingLimit / 2)
        var rng = SystemRandomNumberGenerator()
        let r1 = rng.next(), r2 = rng.next()
        self.inboxPrefix = "_INBOX." + (configuration.inboxNamespace.map { $0 + "." } ?? "") + String(r1, radix: 36) + String(r2, radix: 36)
        (asyncErrors, errorContinuation) = AsyncStream.makeStream(bufferingPolicy: .bufferingNewest(256))
    }

    /// Connects, completes the `info`/`connect` handshake (a `ping` round trip proves auth passed).
    public static func connect(_ configuration: Configuration, logger: Logger = Logger(label: "kiln.bus"),
                               group: any EventLoopGroup = MultiThreadedEventLoopGroup.singleton) async throws -> BusClient {
        let client = BusClient(configuration: configuration, logger: logger, group: group)
        do {
            try await client.establish()
        } catch {
            await client.close()
            throw error
        }
        return client
    }

    public var isConnected: Bool { lock.withLock { status == .connected } }

    /// The broker's `max_frame` (from `info`).
    public var maxFrame: Int { lock.withLock { serverInfo?.maxFrame ?? BusFrame.defaultMaxFrame } }

    // MARK: - publish / subscribe

    /// Publishes `payload` to `subject`. Returns once queued; waits only under back-pressure.
    public func publish<Payload: Collection & Sendable>(_ subject: String, payload: Payload, reply: String? = nil,
                                                        headers: [String: String]? = nil) async throws
    where Payload.Element == UInt8 {
        let backlog = try payload.withContiguousStorageIfAvailable { bytes in
            try enqueuePublish(subject, payload: UnsafeRawBufferPointer(bytes), reply: reply, headers: headers)
        } ?? Array(payload).withUnsafeBytes { try enqueuePublish(subject, payload: $0, reply: reply, headers: headers) }
        if backlog > configuration.pendingLimit {
            try await outbound.waitForRoom()
        }
    }

    public func publish(_ subject: String, payload: ByteBuffer, reply: String? = nil,
                        headers: [String: String]? = nil) async throws {
        let backlog = try payload.withUnsafeReadableBytes { try enqueuePublish(subject, payload: $0, reply: reply, headers: headers) }
        if backlog > configuration.pendingLimit {
            try await outbound.waitForRoom()
        }
    }

    /// The non-generic core of `publish`: validates, encodes straight into the outbound buffer.
    private func enqueuePublish(_ subject: String, payload: UnsafeRawBufferPointer, reply: String?,
                                headers: [String: String]?) throws -> Int {
        try Subject.validatePublish(subject)
        return try enqueueFrame(header: .pub(subject, reply: reply, headers: headers), payload: payload)
    }

    public func publish(_ subject: String, string: String, reply: String? = nil, headers: [String: String]? = nil) async throws {
        try await publish(subject, payload: Array(string.utf8), reply: reply, headers: headers)
    }

    /// Queues one frame unless it would exceed the broker's `max_frame`; returns the backlog in bytes.
    @discardableResult
    private func enqueueFrame<Payload: Collection>(header: BusHeader, payload: Payload) throws(BusClientError) -> Int
    where Payload.Element == UInt8 {
        let max = maxFrame
        var tooLarge = 0
        let result = outbound.enqueue { buffer in
            let start = buffer.writerIndex
            BusFrame.write(header: header, payload: payload, to: &buffer)
            if buffer.writerIndex - start - 4 > max {
                tooLarge = buffer.writerIndex - start - 4
                buffer.moveWriterIndex(to: start)
            }
        }
        if tooLarge > 0 { throw .frameTooLarge(size: tooLarge, max: max) }
        switch result {
        case .closed: throw .closed
        case .queued(let backlog): return backlog
        }
    }

    /// Subscribes to `subject` (wildcards allowed). `queue` joins a queue group; `max` makes the
    /// subscription end by itself after that many messages (`max: 1` = one-shot).
    public func subscribe(_ subject: String, queue: String? = nil, max: Int? = nil) throws -> BusSubscription {
        try Subject.validateSubscription(subject)
        if let max, max <= 0 { throw BusError.badRequest("'max' must be a positive integer") }
        let messages = MessageQueue()
        let sid: String = try lock.withLock {
            guard status != .closed else { throw BusClientError.closed }
            nextSid += 1
            let sid = String(nextSid)
            subscriptions[sid] = SubscriptionState(subject: subject, queue: queue, max: max, messages: messages)
            if status == .connected {
                // While reconnecting, the re-subscribe step sends it.
                outbound.enqueue { BusFrame.write(header: .sub(subject, sid: sid, queue: queue, max: max), payload: EmptyCollection(), to: &$0) }
            }
            return sid
        }
        let client = self
        messages.onCancel = { Task { try? await client.unsubscribe(sid: sid, max: nil) } }
        return BusSubscription(sid: sid, subject: subject, queue: queue, max: max, messages: messages, client: self)
    }

    func unsubscribe(sid: String, max: Int?) async throws {
        let finished: MessageQueue? = try lock.withLock {
            guard status != .closed else { throw BusClientError.closed }
            guard var state = subscriptions[sid] else { return nil }
            if let max, state.delivered < max {
                state.max = max
                subscriptions[sid] = state
                if status == .connected {
                    outbound.enqueue { BusFrame.write(header: .unsub(sid: sid, max: max), payload: EmptyCollection(), to: &$0) }
                }
                return nil
            }
            subscriptions[sid] = nil
            if status == .connected {
                outbound.enqueue { BusFrame.write(header: .unsub(sid: sid), payload: EmptyCollection(), to: &$0) }
            }
            return state.messages
        }
        finished?.finish()
    }

    /// Round trip to the broker: when it returns, everything sent before has been processed by the
    /// broker (subscriptions are live, publishes routed).
    public func flush(timeout: TimeAmount = .seconds(5)) async throws {
        try await withCheckedThrowingContinuation { (continuation: CheckedContinuation<Void, any Error>) in
            let ok: Bool = lock.withLock {
                guard status == .connected else { return false }
                pongWaiters.append(continuation)
                outbound.enqueue { BusFrame.write(header: BusHeader(op: .ping), payload: EmptyCollection(), to: &$0) }
                return true
            }
            if !ok { continuation.resume(throwing: BusClientError.connectionLost) }
        }
    }

    /// Sends a request and waits for the first reply.
    /// - Throws: `BusClientError.noResponders` at once if nobody is subscribed, `.timeout` after `timeout`.
    public func request<Payload: Collection & Sendable>(_ subject: String, payload: Payload, headers: [String: String]? = nil,
                                                        timeout: TimeAmount = .seconds(5)) async throws -> BusMessage
    where Payload.Element == UInt8 {
        try Subject.validatePublish(subject)
        let token: String = try lock.withLock {
            guard status != .closed else { throw BusClientError.closed }
            if inboxSid == nil {
                inboxSid = BusClient.inboxSidName
                subscriptions[BusClient.inboxSidName] = SubscriptionState(subject: inboxPrefix + ".*", messages: MessageQueue())
                if status == .connected {
                    let subject = inboxPrefix + ".*"
                    outbound.enqueue { BusFrame.write(header: .sub(subject, sid: BusClient.inboxSidName), payload: EmptyCollection(), to: &$0) }
                }
            }
            nextRequest += 1
            return String(nextRequest, radix: 36)
        }
        let loop = group.any()
        let message: BusMessage = try await withTaskCancellationHandler {
            try await withCheckedThrowingContinuation { (continuation: CheckedContinuation<BusMessage, any Error>) in
                lock.withLock {
                    requests[token] = PendingRequest(continuation: continuation, timeout: nil, subject: subject)
                }
                let scheduled = loop.scheduleTask(in: timeout) { [weak self] () -> Void in
                    self?.finishRequest(token, with: .failure(BusClientError.timeout(subject: subject)))
                }
                lock.withLock { requests[token]?.timeout = scheduled }
                do {
                    try enqueueFrame(header: .pub(subject, reply: inboxPrefix + "." + token, headers: headers), payload: payload)
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

    private func finishRequest(_ token: String, with result: Result<BusMessage, any Error>) {
        let pending: PendingRequest? = lock.withLock { requests.removeValue(forKey: token) }
        guard let pending else { return }
        pending.timeout?.cancel()
        pending.continuation.resume(with: result)
    }

    // MARK: - shutdown

    /// Unsubscribes everything, waits until the broker has processed it, then closes.
    public func drain(timeout: TimeAmount = .seconds(5)) async {
        let sids: [String] = lock.withLock { Array(subscriptions.keys) }
        for sid in sids { try? await unsubscribe(sid: sid, max: nil) }
        try? await flush(timeout: timeout)
        await close()
    }

    /// Closes at once: streams end, waiters fail with `.closed`.
    public func close() async {
        let (channel, subs, waiters, reqs, task): (
            (any Channel)?, [SubscriptionState], [CheckedContinuation<Void, any Error>], [PendingRequest], Task<Void, Never>?
        ) = lock.withLock {
            status = .closed
            let result = (self.channel, Array(subscriptions.values), pongWaiters, Array(requests.values), reconnectTask)
            subscriptions = [:]
            pongWaiters = []
            requests = [:]
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
        for s in subs { s.messages.finish() }
        for w in waiters { w.resume(throwing: BusClientError.closed) }
        for r in reqs {
            r.timeout?.cancel()
            r.continuation.resume(throwing: BusClientError.closed)
        }
        errorContinuation.finish()
    }

    // MARK: - connection management

    /// Opens a connection and completes the handshake; on success the channel becomes current.
    func establish() async throws {
        let handler = BusClientHandler(client: self)
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
            let info = try await handler.info.futureResult.get()
            let thisGeneration: Int = try lock.withLock {
                guard status != .closed else { throw BusClientError.closed }
                serverInfo = info
                generation += 1
                handler.generation = generation
                var hello = ByteBuffer()
                var connect = BusHeader(op: .connect)
                connect.name = configuration.name
                connect.token = configuration.token
                connect.user = configuration.user
                connect.password = configuration.password
                connect.verbose = false
                connect.proto = 1
                BusFrame.write(header: connect, payload: EmptyCollection(), to: &hello)
                // Re-subscribe what is still live, for its remaining deliveries only.
                for (sid, s) in subscriptions.sorted(by: { $0.key < $1.key }) {
                    let remaining = s.max.map { $0 - s.delivered }
                    if let remaining, remaining <= 0 { continue }
                    BusFrame.write(header: .sub(s.subject, sid: sid, queue: s.queue, max: remaining), payload: EmptyCollection(), to: &hello)
                }
                BusFrame.write(header: BusHeader(op: .ping), payload: EmptyCollection(), to: &hello)
                channel.writeAndFlush(hello, promise: nil)
                self.channel = channel
                status = .connected
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
                if status == .connected { status = .connecting }
                outbound.detach()
                defer { pongWaiters = [] }
                return pongWaiters
            }
            for waiter in stranded { waiter.resume(throwing: BusClientError.connectionLost) }
            channel.close(promise: nil)
            if let e = error as? BusClientError { throw e }
            throw BusClientError.connectFailed("\(error)")
        }
    }

    /// The current channel closed.
    func connectionLost(generation lost: Int) {
        enum Next { case ignore, reconnect, close }
        let (waiters, next): ([CheckedContinuation<Void, any Error>], Next) = lock.withLock {
            // A stale channel (an older generation) or a client already closing: nothing to do.
            guard lost == generation, status == .connected else { return ([], .ignore) }
            channel = nil
            outbound.detach()
            let w = pongWaiters
            pongWaiters = []
            if configuration.reconnect {
                status = .reconnecting
                return (w, .reconnect)
            }
            return (w, .close)
        }
        for w in waiters { w.resume(throwing: BusClientError.connectionLost) }
        switch next {
        case .ignore:
            break
        case .reconnect:
            logger.info("connection to broker lost; reconnecting")
            let task = Task { await self.reconnectLoop() }
            lock.withLock {
                if status == .reconnecting { reconnectTask = task } else { task.cancel() }
            }
        case .close:
            Task { await self.close() }
        }
    }

    private func reconnectLoop() async {
        var delay = configuration.reconnectInitialDelay
        var attempts = 0
        while !Task.isCancelled {
            if lock.withLock({ status == .closed }) { return }
            let jitter = Int64.random(in: 0...(delay.nanoseconds / 4 + 1))
            try? await Task.sleep(nanoseconds: UInt64(delay.nanoseconds + jitter))
            if Task.isCancelled { return }
            do {
                try await establish()
                logger.info("reconnected to broker")
                lock.withLock { reconnectTask = nil }
                return
            } catch {
                attempts += 1
                logger.debug("reconnect attempt \(attempts) failed: \(error)")
                if let max = configuration.maxReconnectAttempts, attempts >= max {
                    logger.warning("giving up reconnecting after \(attempts) attempts")
                    await close()
                    return
                }
                delay = min(delay * 2, configuration.reconnectMaxDelay)
            }
        }
    }

    // MARK: - inbound (called on the channel's event loop by BusClientHandler)

    func received(_ frame: BusFrame) {
        switch frame.header.op {
        case .msg:
            guard let sid = frame.header.sid, let subject = frame.header.subject else { return }
            let message = BusMessage(subject: subject, reply: frame.header.reply, headers: frame.header.headers, payload: frame.payload)
            if sid == BusClient.inboxSidName {
                if let dot = subject.lastIndex(of: ".") {
                    finishRequest(String(subject[subject.index(after: dot)...]), with: .success(message))
                }
                return
            }
            let (queue, spent): (MessageQueue?, Bool) = lock.withLock {
                guard let index = subscriptions.index(forKey: sid) else { return (nil, false) }
                subscriptions.values[index].delivered += 1
                let s = subscriptions.values[index]
                if let max = s.max, s.delivered >= max {
                    subscriptions.remove(at: index)
                    return (s.messages, true)
                }
                return (s.messages, false)
            }
            queue?.push(message)
            if spent { queue?.finish() }
        case .pong:
            let waiter: CheckedContinuation<Void, any Error>? = lock.withLock {
                pongWaiters.isEmpty ? nil : pongWaiters.removeFirst()
            }
            waiter?.resume()
        case .err:
            let error = BusError(code: frame.header.code ?? 0, message: frame.header.message ?? "")
            logger.warning("broker error \(error.code): \(error.message)")
            errorContinuation.yield(error)
        case .info:
            lock.withLock { serverInfo = frame.header }
        case .ping, .ok, .connect, .pub, .sub, .unsub:
            break
        }
    }
}

extension TimeAmount {
    static func * (lhs: TimeAmount, rhs: Int) -> TimeAmount { .nanoseconds(lhs.nanoseconds * Int64(rhs)) }
}
