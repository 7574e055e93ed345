import KilnBus
import NIOCore
import NIOSSL
import NIOTLS

/// The client's channel handler: decodes frames, answers pings, runs the handshake, and hands
/// everything else to `BusClient`.
// @unchecked: a channel handler, confined to its channel's event loop; `generation` is written on
// the loop (in `greet`, under the client's lock) and read by `establish` only after the pong.
final class BusClientHandler: ChannelInboundHandler, @unchecked Sendable {
    typealias InboundIn = ByteBuffer
    typealias OutboundOut = ByteBuffer

    private let client: BusClient
    private let wire: any BusWireProtocol
    private var decoder: any BusInboundDecoder
    /// Completed by the pong answering the handshake's ping (proves `connect` was accepted).
    private(set) var handshakePong: EventLoopPromise<Void>!
    private var handshakeDone = false
    private var helloSeen = false
    /// Set under the client's lock before the handshake frames are written.
    var generation = 0
    private var context: ChannelHandlerContext?
    /// NATS over TLS: the TLS handler to put in front once the plain-text greeting is read.
    private let tlsAfterGreeting: (() throws -> NIOSSLClientHandler)?
    /// The greeting's frame limit, kept while the TLS handshake it started runs.
    private var greetingAwaitingTLS: ServerGreeting?

    init(client: BusClient, wire: any BusWireProtocol, tlsAfterGreeting: (() throws -> NIOSSLClientHandler)? = nil) {
        self.client = client
        self.wire = wire
        self.tlsAfterGreeting = tlsAfterGreeting
        decoder = wire.makeDecoder()
    }

    func handlerAdded(context: ChannelHandlerContext) {
        self.context = context
        handshakePong = context.eventLoop.makePromise()
    }

    /// Fails a handshake still in progress and closes its channel. Once the handshake is done this
    /// does nothing: the handshake timer can fire just after the pong arrived (a loaded machine takes
    /// seconds to connect), and it must not close the connection the client now uses.
    func failHandshake(_ error: any Error) {
        guard !handshakeDone else { return }
        handshakePong.fail(error)
        context?.close(promise: nil)
    }

    func channelRead(context: ChannelHandlerContext, data: NIOAny) {
        decoder.append(unwrapInboundIn(data))
        while true {
            let inbound: BusInbound?
            do { inbound = try decoder.next() } catch {
                failHandshake(BusClientError.broker(error))
                context.close(promise: nil)
                return
            }
            guard let inbound else { break }
            switch inbound {
            case .hello(let greeting) where !helloSeen:
                helloSeen = true
                if let makeTLS = tlsAfterGreeting {
                    do {
                        greetingAwaitingTLS = greeting
                        try context.pipeline.syncOperations.addHandler(try makeTLS(), position: .first)
                    } catch {
                        failHandshake(BusClientError.connectFailed("TLS: \(error)"))
                    }
                    return
                }
                do { try client.greet(on: context.channel, handler: self, answering: greeting) } catch {
                    failHandshake(error)
                }
            case .ping:
                var pong = ByteBuffer()
                wire.writePong(to: &pong)
                context.writeAndFlush(wrapOutboundOut(pong), promise: nil)
            case .pong where !handshakeDone:
                handshakeDone = true
                handshakePong.succeed(())
            case .error(let error) where !handshakeDone:
                failHandshake(BusClientError.broker(BusError(code: error.code, message: error.message, isFatal: true)))
            default:
                client.received(inbound)
            }
        }
        decoder.compact()
    }

    func userInboundEventTriggered(context: ChannelHandlerContext, event: Any) {
        if case TLSUserEvent.handshakeCompleted = event, let greeting = greetingAwaitingTLS {
            greetingAwaitingTLS = nil
            do { try client.greet(on: context.channel, handler: self, answering: greeting) } catch {
                failHandshake(error)
            }
        }
        context.fireUserInboundEventTriggered(event)
    }

    func channelWritabilityChanged(context: ChannelHandlerContext) {
        client.outbound.flush()  // also records the new writability
        context.fireChannelWritabilityChanged()
    }

    func channelInactive(context: ChannelHandlerContext) {
        failHandshake(BusClientError.connectionLost)
        if handshakeDone { client.connectionLost(generation: generation) }
        context.fireChannelInactive()
    }

    func errorCaught(context: ChannelHandlerContext, error: any Error) {
        context.close(promise: nil)
    }
}
