import HTTPTypes
import NIOConcurrencyHelpers
import NIOCore
import NIOHTTPTypes
import NIOHTTPTypesHTTP1

/// Writes a job's live events straight into one HTTP connection, on its event loop.
///
/// Why a channel handler: with 1 000 clients on a job, every event becomes 1 000 socket writes,
/// and going through each client's task and async writer cost about twice the write itself. The
/// hub calls `deliver` on the connection's event loop with the event's shared encoding, and the
/// relay writes it as a body part through the HTTP encoder below it: no task wakes per event.
///
/// One relay per connection, sitting between Hummingbird's HTTP codec and its connection handler
/// (added with `HTTP1Channel.Configuration.additionalChannelHandlers`); it passes everything else
/// through. The SSE route uses it for one stream at a time (HTTP/1.1 requests are sequential):
/// `begin` buffers live events while the route replays stored ones, `goLive` sends what was
/// buffered past the replay and everything after it, `finished` completes after the terminal
/// event, when the client is cut off, or when the connection closes.
// @unchecked: a channel handler; its mutable state is touched on its channel's event loop only
// (calls from tasks hop there with `eventLoop.execute`).
public final class SSERelay: ChannelDuplexHandler, RemovableChannelHandler, @unchecked Sendable {
    public typealias InboundIn = HTTPRequestPart
    public typealias InboundOut = HTTPRequestPart
    public typealias OutboundIn = HTTPResponsePart
    public typealias OutboundOut = HTTPResponsePart

    enum State {
        case idle
        /// Live events kept while the route replays stored ones.
        case buffering([SSEFrame])
        case live(last: Int)
        case finished
    }

    /// Everything below is touched on `eventLoop` only.
    private var context: ChannelHandlerContext?
    private var state = State.idle
    private var done: EventLoopPromise<Void>?
    /// Events written while the socket would not take more; past `backlog` the client is cut off.
    private var writtenWhileBlocked = 0
    private var backlog = 0
    private var bytesRelayed: (@Sendable (Int) -> Void)?
    public private(set) var eventLoop: (any EventLoop)?

    public init() {}

    public func handlerAdded(context: ChannelHandlerContext) {
        self.context = context
        eventLoop = context.eventLoop
        // Its companion for result downloads goes below the HTTP-types codec (see `FileSender`).
        if let codec = try? context.pipeline.syncOperations.handler(type: HTTP1ToHTTPServerCodec.self) {
            // On the channel's own event loop this cannot fail; without it downloads fall back to Hummingbird's body writer.
            try? context.pipeline.syncOperations.addHandler(FileSender(), position: .before(codec))
        }
    }

    public func handlerRemoved(context: ChannelHandlerContext) {
        end()
        self.context = nil
    }

    public func channelInactive(context: ChannelHandlerContext) {
        end()
        context.fireChannelInactive()
    }

    public func channelWritabilityChanged(context: ChannelHandlerContext) {
        if context.channel.isWritable { writtenWhileBlocked = 0 }
        context.fireChannelWritabilityChanged()
    }

    // MARK: - the SSE route's side (on the event loop)

    /// Starts a stream: live events are buffered until `goLive`. The future completes when the
    /// stream is over (terminal event sent, client cut off, connection closed).
    func begin(backlog: Int, bytesRelayed: @escaping @Sendable (Int) -> Void) -> EventLoopFuture<Void> {
        let promise = eventLoop!.makePromise(of: Void.self)
        done = promise
        state = .buffering([])
        writtenWhileBlocked = 0
        self.backlog = backlog
        self.bytesRelayed = bytesRelayed
        if context == nil { end() }
        return promise.futureResult
    }

    /// The route has sent every stored event up to `last`; send the buffered ones after it, then
    /// everything live.
    func goLive(after last: Int) {
        guard case .buffering(let frames) = state else { return }
        state = .live(last: last)
        for frame in frames { deliver(frame) }
    }

    /// Ends the stream without the terminal event (the route found the job terminal already).
    func finish() { end() }

    /// `begin` and `goLive` for tests, which drive the relay on an embedded channel.
    public func beginForTesting(backlog: Int) -> EventLoopFuture<Void> { begin(backlog: backlog) { _ in } }
    public func goLiveForTesting(after last: Int) { goLive(after: last) }

    // MARK: - the hub's side (on the event loop)

    func deliver(_ frame: SSEFrame) {
        switch state {
        case .idle, .finished:
            return
        case .buffering(var frames):
            if frames.count >= backlog {
                cutOff()
                return
            }
            state = .idle  // no copy-on-write of the buffer while appending
            frames.append(frame)
            state = .buffering(frames)
        case .live(let last):
            if frame.seq <= last { return }
            guard frame.seq == last + 1 else {
                // Cannot happen with the hub's ordering; if it does, the client resumes with
                // Last-Event-ID and misses nothing.
                cutOff()
                return
            }
            state = frame.isTerminal ? .finished : .live(last: frame.seq)
            write(frame.bytes)
            if frame.isTerminal { end() }
        }
    }

    func keepalive() {
        guard case .live = state else { return }
        write(ByteBuffer(staticString: ": keepalive\n\n"))
    }

    // MARK: -

    private func write(_ bytes: ByteBuffer) {
        guard let context else { return }
        if !context.channel.isWritable {
            writtenWhileBlocked += 1
            if writtenWhileBlocked > backlog {
                cutOff()
                return
            }
        }
        bytesRelayed?(bytes.readableBytes)
        context.writeAndFlush(wrapOutboundOut(.body(bytes)), promise: nil)
    }

    /// A client too slow for the relay: disconnected rather than buffered without bound.
    private func cutOff() {
        end()
        context?.close(promise: nil)
    }

    private func end() {
        state = .finished
        bytesRelayed = nil
        let promise = done
        done = nil
        promise?.succeed()
    }
}
