import KilnBus
import NIOConcurrencyHelpers
import NIOCore

/// The bytes waiting to go out on one connection, with a hard cap.
///
/// Deliveries come from whichever event loop routed the message; they are appended to one pending
/// buffer under a lock and flushed by a single task on the connection's own event loop, so a burst of
/// small messages becomes one `write` syscall. Bytes are handed to the channel only while it is writable,
/// so `pendingBytes` is the true backlog; past `cap` the connection is a slow consumer.
public final class ConnectionOutbound: @unchecked Sendable {
    public enum EnqueueResult: Sendable { case queued, overCap, closed }

    let channel: any Channel
    let cap: Int
    private let lock = NIOLock()
    private var pending: ByteBuffer
    private var flushScheduled = false
    private var isClosed = false
    private var onOverCap: (@Sendable (Int) -> Void)?

    init(channel: any Channel, cap: Int, onOverCap: @escaping @Sendable (Int) -> Void) {
        self.channel = channel
        self.cap = cap
        self.pending = channel.allocator.buffer(capacity: 0)
        self.onOverCap = onOverCap
    }

    public var pendingBytes: Int { lock.withLock { pending.readableBytes } }

    /// Appends one frame (written by `encode`) and makes sure a flush is scheduled.
    @discardableResult
    func enqueue(_ encode: (inout ByteBuffer) -> Void) -> EnqueueResult {
        let (result, schedule, over): (EnqueueResult, Bool, (@Sendable (Int) -> Void)?) = lock.withLock {
            if isClosed { return (.closed, false, nil) }
            encode(&pending)
            if pending.readableBytes > cap {
                isClosed = true
                let n = pending.readableBytes
                pending = ByteBuffer()
                let callback = onOverCap
                onOverCap = nil
                _ = n
                return (.overCap, false, callback)
            }
            if flushScheduled { return (.queued, false, nil) }
            flushScheduled = true
            return (.queued, true, nil)
        }
        if let over { over(cap) }
        if schedule {
            channel.eventLoop.execute { self.flush() }
        }
        return result
    }

    /// Hands pending bytes to the channel. Runs on the channel's event loop.
    func flush() {
        let batch: ByteBuffer? = lock.withLock {
            flushScheduled = false
            guard !isClosed || pending.readableBytes > 0, pending.readableBytes > 0 else { return nil }
            guard channel.isWritable else { return nil }
            let b = pending
            pending = channel.allocator.buffer(capacity: Swift.min(b.readableBytes, 64 * 1024))
            return b
        }
        if let batch {
            channel.writeAndFlush(batch, promise: nil)
        }
    }

    /// Stops accepting deliveries (connection closing). Returns what was still pending.
    @discardableResult
    func close() -> ByteBuffer? {
        lock.withLock {
            isClosed = true
            onOverCap = nil
            let b = pending
            pending = ByteBuffer()
            return b.readableBytes > 0 ? b : nil
        }
    }
}
