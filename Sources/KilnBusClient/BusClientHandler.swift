import KilnBus
import NIOCore

/// The client's channel handler: decodes frames, answers pings, runs the handshake, and hands
/// everything else to `BusClient`.
final class BusClientHandler: ChannelInboundHandler, @unchecked Sendable {
    typealias InboundIn = ByteBuffer
    typealias OutboundOut = ByteBuffer

    private let client: BusClient
    private var decoder = FrameDecoder(maxFrame: Int(UInt32.max))
    /// Completed by the broker's `info` frame.
    private(set) var info: EventLoopPromise<BusHeader>!
    /// Completed by the pong answering the handshake's ping (proves `connect` was accepted).
    private(set) var handshakePong: EventLoopPromise<Void>!
    private var handshakeDone = false
    private var infoSeen = false
    /// Set under the client's lock before the handshake frames are written.
    var generation = 0
    private var context: ChannelHandlerContext?

    init(client: BusClient) { self.client = client }

    func handlerAdded(context: ChannelHandlerContext) {
        self.context = context
        info = context.eventLoop.makePromise()
        handshakePong = context.eventLoop.makePromise()
    }

    /// Fails a handshake still in progress and closes its channel. Once the handshake is done this
    /// does nothing: the handshake timer can fire just after the pong arrived (a loaded machine takes
    /// seconds to connect), and it must not close the connection the client now uses.
    func failHandshake(_ error: any Error) {
        guard !handshakeDone else { return }
        info.fail(error)
        handshakePong.fail(error)
        context?.close(promise: nil)
    }

    func channelRead(context: ChannelHandlerContext, data: NIOAny) {
        decoder.append(unwrapInboundIn(data))
        while true {
            let decoded: FrameDecoder.Decoded?
            do { decoded = try decoder.next() } catch {
                failHandshake(BusClientError.broker(error))
                context.close(promise: nil)
                return
            }
            guard let decoded else { break }
            guard case .frame(let frame) = decoded else { continue }
            switch frame.header.op {
            case .info where !infoSeen:
                infoSeen = true
                info.succeed(frame.header)
            case .ping:
                var pong = ByteBuffer()
                BusFrame.write(header: BusHeader(op: .pong), payload: EmptyCollection(), to: &pong)
                context.writeAndFlush(wrapOutboundOut(pong), promise: nil)
            case .pong where !handshakeDone:
                handshakeDone = true
                handshakePong.succeed(())
            case .err where !handshakeDone:
                let error = BusError(code: frame.header.code ?? 0, message: frame.header.message ?? "", isFatal: true)
                failHandshake(BusClientError.broker(error))
            default:
                client.received(frame)
            }
        }
        decoder.compact()
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
