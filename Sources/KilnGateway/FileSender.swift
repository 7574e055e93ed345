import NIOCore
import NIOHTTP1

/// Sends a file as a response body with `sendfile(2)`: the bytes go from the page cache to the
/// socket without being copied through the gateway, so a result downloads as fast as a static
/// file server sends it. Hummingbird's body writer only takes byte buffers, so this handler sits
/// just below its HTTP codec (installed by `SSERelay` when the connection is set up) and writes
/// a `FileRegion` as a body part; the response must carry `Content-Length` (no chunk framing).
// @unchecked: a channel handler, used on its channel's event loop only.
final class FileSender: ChannelOutboundHandler, RemovableChannelHandler, @unchecked Sendable {
    typealias OutboundIn = HTTPServerResponsePart
    typealias OutboundOut = HTTPServerResponsePart

    private var context: ChannelHandlerContext?

    func handlerAdded(context: ChannelHandlerContext) { self.context = context }
    func handlerRemoved(context: ChannelHandlerContext) { self.context = nil }

    /// Writes `length` bytes of the open file `descriptor` from `offset`; takes ownership of the
    /// descriptor and closes it once written (or failed). Call on the channel's event loop.
    func send(descriptor: CInt, offset: Int, length: Int, on eventLoop: any EventLoop) -> EventLoopFuture<Void> {
        let handle = NIOFileHandle(_deprecatedTakingOwnershipOfDescriptor: descriptor)
        guard let context else {
            // Closing a file opened only for reading: nothing to lose if it fails.
            try? handle.close()
            return eventLoop.makeFailedFuture(ChannelError.ioOnClosedChannel)
        }
        let region = FileRegion(fileHandle: handle, readerIndex: offset, endIndex: offset + length)
        let promise = eventLoop.makePromise(of: Void.self)
        // Closing a file opened only for reading: nothing to lose if it fails.
        promise.futureResult.whenComplete { _ in try? handle.close() }
        context.writeAndFlush(wrapOutboundOut(.body(.fileRegion(region))), promise: promise)
        return promise.futureResult
    }
}
