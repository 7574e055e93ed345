import KilnBus
import KilnCore
import NIOCore
import NIOPosix
import NIOSSL

/// Connecting, the handshake, losing the connection and reconnecting with backoff, and what arrives
/// from the broker.
extension BusClient {
    // MARK: - connection management

    /// Opens a connection and completes the handshake; on success the channel becomes current.
    func establish() async throws {
        let server = currentServer
        let tlsContext: NIOSSLContext?
        do { tlsContext = try configuration.tls.map { try $0.makeContext() } } catch {
            throw BusClientError.connectFailed("TLS set-up for \(server.host): \(error)")
        }
        // SNI and hostname checks take a name; for an IP address NIOSSL checks the certificate's IP SANs.
        let serverHostname = server.host.allSatisfy({ $0.isNumber || $0 == "." || $0 == ":" }) ? nil : server.host
        // Kiln bus TLS starts with the connection; NATS sends its greeting in plain text and the client
        // upgrades after reading it (nats-server before 2.10 knows no TLS-first handshake).
        let upgradeAfterGreeting = configuration.wireProtocol == .nats
        let handler = BusClientHandler(
            client: self, wire: wire,
            tlsAfterGreeting: upgradeAfterGreeting ? tlsContext.map { context in { try NIOSSLClientHandler(context: context, serverHostname: serverHostname) } } : nil)
        let bootstrap = ClientBootstrap(group: group)
            .connectTimeout(configuration.connectTimeout)
            .channelOption(.socketOption(.tcp_nodelay), value: 1)
            .channelOption(.writeBufferWaterMark, value: .init(low: 256 * 1024, high: 1024 * 1024))
            .channelInitializer { channel in
                channel.eventLoop.makeCompletedFuture {
                    if let tlsContext, !upgradeAfterGreeting {
                        try channel.pipeline.syncOperations.addHandler(try NIOSSLClientHandler(context: tlsContext, serverHostname: serverHostname))
                    }
                    try channel.pipeline.syncOperations.addHandler(handler)
                }
            }
        let channel: any Channel
        do {
            channel = try await bootstrap.connect(host: server.host, port: server.port).get()
        } catch {
            throw BusClientError.connectFailed("\(server.host):\(server.port): \(error)")
        }
        do {
            let timeout = channel.eventLoop.scheduleTask(in: configuration.connectTimeout) {
                handler.failHandshake(BusClientError.connectFailed("handshake timed out"))
            }
            defer { timeout.cancel() }
            try await handler.handshakePong.futureResult.get()
            logger.debug("connected", metadata: ["broker": "\(server.host):\(server.port)", "generation": "\(handler.generation)"])
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

    /// Answers the broker's greeting with `connect`, the re-subscriptions and the handshake's ping.
    ///
    /// Called by the handler on the channel's event loop as the greeting is decoded, not from the task
    /// awaiting `establish`: on a loaded machine the cooperative pool can be busy for seconds, and the
    /// broker closes a connection that has not sent `connect` within its handshake timeout.
    func greet(on channel: any Channel, handler: BusClientHandler, answering greeting: ServerGreeting) throws {
        try lock.withLock {
            var hello = ByteBuffer()
            try wire.writeGreeting(configuration, answering: greeting, to: &hello)
            let (generation, resubscribe) = try machine.connectionEstablished()
            serverMaxFrame = greeting.maxFrame
            handler.generation = generation
            // Re-subscribe what is still live, for its remaining deliveries only.
            for command in resubscribe { wire.write(command, to: &hello) }
            wire.write(.ping, to: &hello)
            channel.writeAndFlush(hello, promise: nil)
            self.channel = channel
            outbound.attach(channel)
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

    func reconnectLoop() async {
        var backoff = Backoff(
            initial: .nanoseconds(configuration.reconnectInitialDelay.nanoseconds),
            maximum: .nanoseconds(configuration.reconnectMaxDelay.nanoseconds),
            maxAttempts: configuration.maxReconnectAttempts)
        while !Task.isCancelled {
            if lock.withLock({ machine.status == .closed }) { return }
            try? await Task.sleep(for: backoff.nextDelay())
            if Task.isCancelled { return }
            // A cluster: each attempt goes to the next member (the lost one may be down for good).
            if configuration.members.count > 1 { advanceServer() }
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
    func send(_ command: BusCommand) {
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
        case .hello(let greeting):
            lock.withLock { serverMaxFrame = greeting.maxFrame }
        case .ping, .ignored:
            break
        }
    }
}
