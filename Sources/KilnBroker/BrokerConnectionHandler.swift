import KilnBus
import Logging
import NIOCore
import NIOSSL
import NIOTLS

/// Carries out a connection's `ConnectionStateMachine` actions on one channel.
///
/// The handler owns the decoder and the state machine (event-loop confined); routing goes through
/// the shared `MessageRouter`, deliveries through this connection's `ConnectionOutbound`. Any error here ends
/// this connection only.
final class BrokerConnectionHandler: ChannelInboundHandler {
    typealias InboundIn = ByteBuffer
    typealias OutboundOut = ByteBuffer

    let id: Int
    let shared: BrokerServer.Shared
    private var decoder: FrameDecoder
    private var machine: ConnectionStateMachine
    private var outbound: OutboundBuffer!
    private var keepalive: RepeatedTask?
    private var handshakeTimer: Scheduled<Void>?
    /// The remote address this connection was counted under, once admitted.
    private var admittedAddress: String?
    private lazy var connectionLabel = String(id)
    /// The authenticated name stamped on this connection's messages, read once when it opens (not
    /// per publish: matching the state copies the identity and its permission lists).
    private var stamp: String?
    private var stampResolved = false
    private var closing = false
    /// Reused for each publish's shared `msg` header prefix (no allocation per message).
    private var scratch = ByteBuffer()
    /// Subscribers' flushes owed by the publishes of the current read, scheduled once it is handled:
    /// a read of many small messages wakes each subscriber's event loop once, not once per message.
    private var flushes = FlushBatch()
    private var logger: Logger

    init(id: Int, shared: BrokerServer.Shared) {
        self.id = id
        self.shared = shared
        self.machine = ConnectionStateMachine(configuration: shared.connectionConfiguration, now: .now())
        // Until it has sent `connect` (and, with auth, been authenticated by it), a connection may send
        // only small frames — on an open broker too.
        self.decoder = FrameDecoder(maxFrame: min(shared.configuration.maxFrame, shared.configuration.preConnectMaxFrame))
        var logger = shared.logger
        logger[metadataKey: "connection"] = "\(id)"
        self.logger = logger
    }

    func handlerAdded(context: ChannelHandlerContext) {
        outbound = OutboundBuffer(channel: context.channel)
    }

    /// A connection whose backlog passed the cap: discard the backlog, say why, close.
    /// Called from whichever event loop overflowed it.
    static func cutOffSlowConsumer(_ outbound: OutboundBuffer, id: Int, pending: Int, shared: BrokerServer.Shared) {
        guard outbound.closeIfOpen(), let channel = outbound.attachedChannel else { return }
        shared.metrics.slowConsumers.increment()
        shared.logger.warning("slow consumer cut off", metadata: ["connection": "\(id)", "pending": "\(pending)"])
        let err = BusError.slowConsumer(pending: pending, cap: shared.configuration.outboundCap)
        channel.writeAndFlush(BusFrame(header: err.header).encoded).whenComplete { _ in channel.close(promise: nil) }
    }

    func channelActive(context: ChannelHandlerContext) {
        let address = context.remoteAddress?.ipAddress ?? "unknown"
        if let limit = shared.admit(address: address) {
            shared.metrics.limitRefusals(limit)
            logger.warning("connection refused: \(limit.rawValue) limit", metadata: ["remote": "\(address)"])
            let max = limit == .connections ? shared.configuration.maxConnections : shared.configuration.maxConnectionsPerAddress
            let err = BusError.limitReached("too many connections (\(limit == .connections ? "in total" : "from \(address)"), at most \(max))", fatal: true)
            let channel = context.channel
            channel.writeAndFlush(BusFrame(header: err.header).encoded).whenComplete { _ in channel.close(promise: nil) }
            closing = true
            return
        }
        admittedAddress = address
        shared.register(id: id, channel: context.channel)
        shared.router.addConnection(id, recordsResponses: false)
        shared.metrics.connections.increment()
        shared.metrics.connectionsTotal.increment()
        send(shared.infoHeader)
        let interval = shared.connectionConfiguration.pingInterval
        let loopBound = NIOLoopBound(self, eventLoop: context.eventLoop)
        keepalive = context.eventLoop.scheduleRepeatedTask(initialDelay: interval, delay: interval) { _ in
            loopBound.value.keepaliveTick()
        }
        if machine.isAwaitingConnect {
            handshakeTimer = context.eventLoop.scheduleTask(in: shared.connectionConfiguration.handshakeTimeout) {
                loopBound.value.handshakeTick()
            }
        }
        context.fireChannelActive()
    }

    func channelInactive(context: ChannelHandlerContext) {
        guard let address = admittedAddress else {
            context.fireChannelInactive()
            return
        }
        shared.release(address: address)
        admittedAddress = nil
        handshakeTimer?.cancel()
        keepalive?.cancel()
        keepalive = nil
        machine.closed()
        outbound.close()
        shared.router.removeConnection(id)
        shared.unregister(id: id)
        shared.metrics.connections.decrement()
        context.fireChannelInactive()
    }

    func channelWritabilityChanged(context: ChannelHandlerContext) {
        outbound.flush()  // also records the new writability
        context.fireChannelWritabilityChanged()
    }

    /// With mTLS, the verified client certificate names the user this connection may log in as.
    func userInboundEventTriggered(context: ChannelHandlerContext, event: Any) {
        if case TLSUserEvent.handshakeCompleted = event,
            let handler = try? context.pipeline.syncOperations.handler(type: NIOSSLServerHandler.self),
            let certificate = handler.peerCertificate, let der = try? certificate.toDERBytes()
        {
            machine.certificateName = BrokerTLS.commonName(certificateDER: der)
        }
        context.fireUserInboundEventTriggered(event)
    }

    func errorCaught(context: ChannelHandlerContext, error: any Error) {
        logger.debug("connection error: \(error)")
        context.close(promise: nil)
    }

    func channelRead(context: ChannelHandlerContext, data: NIOAny) {
        guard !closing else { return }
        decoder.append(unwrapInboundIn(data))
        var published = 0
        var publishedBytes = 0
        let now = NIODeadline.now()
        while !closing {
            let decoded: FrameDecoder.Decoded
            do {
                guard let d = try decoder.next() else { break }
                decoded = d
            } catch {
                if !machine.hasSentConnect, error.code == BusError.Code.frameTooLarge { shared.metrics.limitRefusals(.preConnectFrame) }
                fail(error)
                break
            }
            switch decoded {
            case .invalid(let error):
                perform(machine.invalidFrame(error, now: now), payload: ByteBuffer())
            case .frame(let frame):
                let action = machine.frameReceived(frame.header, now: now)
                if case .publish = action {
                    published += 1
                    publishedBytes += frame.payload.readableBytes
                }
                perform(action, payload: frame.payload)
                if decoder.maxFrame != shared.configuration.maxFrame, machine.hasSentConnect, case .open = machine.state {
                    decoder.maxFrame = shared.configuration.maxFrame
                }
            }
        }
        decoder.compact()
        flushes.run()
        if published > 0 {
            shared.metrics.messagesIn.increment(by: Int64(published))
            shared.metrics.bytesIn.increment(by: Int64(publishedBytes))
        }
    }

    // MARK: actions

    private func perform(_ action: ConnectionStateMachine.Action, payload: ByteBuffer) {
        switch action {
        case .none:
            if case .open(let identity) = machine.state, identity.permissions.allowResponses {
                shared.router.setRecordsResponses(id, true)
            }
        case .publish(let subject, let reply, let headers):
            route(subject: subject, reply: reply, headers: headers, payload: payload)
        case .publishIfResponseAllowed(let subject, let reply, let headers):
            if shared.router.consumeResponseAllowance(connectionID: id, subject: subject) {
                route(subject: subject, reply: reply, headers: headers, payload: payload)
            } else {
                fail(.permissionDenied("permission denied: publish to '\(subject)'"))
            }
        case .subscribe(let sid, let subject, let queue, let max):
            let deny = machine.permissions?.subscribe
            let sub = Subscription(
                connectionID: id, sid: sid, subject: subject, queue: queue, max: max,
                outbound: outbound, outboundCap: shared.configuration.outboundCap, deliveryFilter: (deny?.deny.isEmpty ?? true) ? nil : deny)
            do {
                try shared.router.subscribe(sub)
                acknowledge()
            } catch {
                fail(error)
            }
        case .unsubscribe(let sid, let max):
            do {
                try shared.router.unsubscribe(connectionID: id, sid: sid, max: max)
                acknowledge()
            } catch {
                fail(error)
            }
        case .send(let header):
            if header.op == .ok, case .open(let identity) = machine.state, identity.permissions.allowResponses {
                shared.router.setRecordsResponses(id, true)
            }
            send(header)
        case .fail(let error):
            fail(error)
        }
    }

    private func route(subject: String, reply: String?, headers: [String: String]?, payload: ByteBuffer) {
        // The sender header is the broker's word: stamped for authenticated users, never taken from a client.
        var headers = headers
        if !stampResolved, case .open(let identity) = machine.state {
            stamp = identity.authenticatedName
            stampResolved = true
        }
        if let name = stamp {
            headers = headers ?? [:]
            headers![BusHeader.senderHeader] = name
            headers![BusHeader.senderConnectionHeader] = connectionLabel
        } else if headers != nil, headers![BusHeader.senderHeader] != nil || headers![BusHeader.senderConnectionHeader] != nil {
            headers![BusHeader.senderHeader] = nil
            headers![BusHeader.senderConnectionHeader] = nil
        }
        let deliveries = shared.router.publish(subject: subject, reply: reply, headers: headers, payload: payload, scratch: &scratch, flushes: &flushes)
        if deliveries == 0, let reply {
            // No responders: tell the requester at once (design §2).
            shared.router.publish(subject: reply, reply: nil, headers: ["status": "503"], payload: ByteBuffer(), scratch: &scratch, flushes: &flushes)
        }
        acknowledge()
    }

    private func acknowledge() {
        if machine.verbose { send(BusHeader(op: .ok)) }
    }

    private func send(_ header: BusHeader) {
        outbound.enqueue { BusFrame.write(header: header, payload: EmptyCollection<UInt8>(), to: &$0) }
    }

    private func fail(_ error: BusError) {
        shared.metrics.protocolErrors.increment()
        logger.debug("protocol error", metadata: ["code": "\(error.code)", "message": "\(error.message)"])
        if error.isFatal {
            closeAfter(error)
        } else {
            send(error.header)
        }
    }

    /// Sends `error` after whatever is pending, then closes.
    private func closeAfter(_ error: BusError) {
        guard !closing else { return }
        closing = true
        machine.closed()
        var bytes = outbound.close() ?? ByteBuffer()
        BusFrame(header: error.header).write(to: &bytes)
        guard let channel = outbound.attachedChannel else { return }
        channel.writeAndFlush(bytes).whenComplete { _ in channel.close(promise: nil) }
    }

    private func keepaliveTick() {
        switch machine.keepaliveTick(now: .now()) {
        case .none: break
        case .sendPing: send(BusHeader(op: .ping))
        case .close(let error):
            shared.metrics.staleConnections.increment()
            logger.info("closing stale connection")
            closeAfter(error)
        }
    }

    private func handshakeTick() {
        guard case .close(let error) = machine.handshakeTick(now: .now()) else { return }
        shared.metrics.limitRefusals(.handshake)
        logger.info("closing a connection that never sent connect")
        closeAfter(error)
    }

    /// Graceful drain: flush what is pending, say goodbye, close.
    func drain() {
        closeAfter(.shuttingDown())
    }
}
