import NIOConcurrencyHelpers
import NIOCore

/// Bytes waiting to go out on one connection.
///
/// Frames can be enqueued from any thread; they are appended to one pending buffer under a lock and a
/// single flush on the channel's event loop hands the whole batch to the channel, so a burst of small
/// frames becomes one `write` syscall. Bytes go to the channel only while it is writable, so
/// `pendingBytes` is the real backlog: the broker cuts a connection off when it passes a cap; the
/// client makes publishers wait until it drains (`waitForRoom`). With no channel attached (a client
/// between reconnects) frames simply accumulate.
// @unchecked: every mutable field is accessed with `lock` held.
public final class OutboundBuffer: @unchecked Sendable {
    public enum EnqueueResult: Sendable, Equatable {
        /// `backlog`: bytes pending while the connection cannot take them (channel unwritable or
        /// detached), else 0. Bytes merely waiting for the next flush on a writable channel are not a
        /// backlog: a single read burst on another connection can queue a megabyte before our flush runs.
        case queued(backlog: Int)
        case closed
    }

    private let lock = NIOLock()
    private var channel: (any Channel)?
    private var pending = ByteBuffer()
    private var flushScheduled = false
    private var isClosed = false
    /// Last writability seen on the event loop (flush / writability change).
    private var channelWritable = true
    private var waiters: [CheckedContinuation<Void, any Error>] = []
    /// Publishers waiting in `waitForRoom` resume once the backlog is at or below this.
    public let lowWater: Int

    public init(channel: (any Channel)? = nil, lowWater: Int = 1 << 20) {
        self.channel = channel
        self.lowWater = lowWater
    }

    public var pendingBytes: Int { lock.withLock { pending.readableBytes } }

    public var attachedChannel: (any Channel)? { lock.withLock { channel } }

    /// Appends one frame, written in place by `encode`, and schedules a flush.
    @discardableResult
    public func enqueue(_ encode: (inout ByteBuffer) -> Void) -> EnqueueResult {
        let (result, flushOn) = append(encode)
        flushOn?.eventLoop.execute { self.flush() }
        return result
    }

    /// Appends one frame like `enqueue`, but leaves the flush to `batch`, which the caller runs once
    /// it has finished a burst (the broker: after each read from a publisher). Scheduling a flush on
    /// another event loop wakes that loop (an eventfd write); one wake per burst instead of one per
    /// message is most of the cost of small messages. Until the batch runs, other senders see the
    /// flush as scheduled and add to the same write.
    @discardableResult
    public func enqueue(flushingIn batch: inout FlushBatch, _ encode: (inout ByteBuffer) -> Void) -> EnqueueResult {
        let (result, flushOn) = append(encode)
        if flushOn != nil { batch.buffers.append(self) }
        return result
    }

    /// Appends under the lock; returns the channel to schedule a flush on when none is scheduled yet.
    private func append(_ encode: (inout ByteBuffer) -> Void) -> (EnqueueResult, (any Channel)?) {
        lock.withLock {
            if isClosed { return (.closed, nil) }
            encode(&pending)
            let backlog = (channel == nil || !channelWritable) ? pending.readableBytes : 0
            guard !flushScheduled, let channel else { return (.queued(backlog: backlog), nil) }
            flushScheduled = true
            return (.queued(backlog: backlog), channel)
        }
    }

    /// Schedules the flush an `enqueue(flushingIn:)` left to its batch.
    fileprivate func scheduleFlush() {
        guard let channel = lock.withLock({ channel }) else {
            // Detached since: `attach` schedules its own flush of everything pending.
            return
        }
        channel.eventLoop.execute { self.flush() }
    }

    /// Hands the pending batch to the channel if it is writable. Runs on the channel's event loop;
    /// call it again from `channelWritabilityChanged`.
    public func flush() {
        let (batch, target, resume): (ByteBuffer?, (any Channel)?, [CheckedContinuation<Void, any Error>]) = lock.withLock {
            flushScheduled = false
            channelWritable = channel?.isWritable ?? false
            guard let channel, channelWritable, pending.readableBytes > 0 else { return (nil, nil, []) }
            let b = pending
            pending = ByteBuffer()
            let w = waiters
            waiters = []
            return (b, channel, w)
        }
        if let batch, let target {
            target.writeAndFlush(batch, promise: nil)
        }
        for w in resume { w.resume() }
    }

    /// Waits until the backlog is at or below `lowWater` (client-side back-pressure).
    public func waitForRoom() async throws {
        try await withCheckedThrowingContinuation { (continuation: CheckedContinuation<Void, any Error>) in
            let resumeNow: Bool = lock.withLock {
                if isClosed || pending.readableBytes <= lowWater { return true }
                waiters.append(continuation)
                return false
            }
            if resumeNow { continuation.resume() }
        }
    }

    /// Starts sending through `channel` (after connect or reconnect); anything queued meanwhile goes first.
    public func attach(_ channel: any Channel) {
        lock.withLock {
            self.channel = channel
            flushScheduled = true
        }
        channel.eventLoop.execute { self.flush() }
    }

    /// Stops sending (connection lost); frames keep accumulating until `attach`.
    public func detach() {
        lock.withLock {
            channel = nil
            flushScheduled = false
        }
    }

    /// Prepends bytes (a reconnect's `connect` and `sub` frames must precede queued publishes).
    public func prepend(_ bytes: ByteBuffer) {
        lock.withLock {
            var b = bytes
            b.writeBuffer(&pending)
            pending = b
        }
    }

    /// Refuses further frames and returns what was still pending.
    @discardableResult
    public func close() -> ByteBuffer? {
        let (b, w): (ByteBuffer, [CheckedContinuation<Void, any Error>]) = lock.withLock {
            isClosed = true
            let b = pending
            pending = ByteBuffer()
            let w = waiters
            waiters = []
            return (b, w)
        }
        for x in w { x.resume() }
        return b.readableBytes > 0 ? b : nil
    }

    /// Closes and reports whether this call was the one that closed it (so a cut-off happens once).
    public func closeIfOpen() -> Bool {
        let (wasOpen, w): (Bool, [CheckedContinuation<Void, any Error>]) = lock.withLock {
            let wasOpen = !isClosed
            isClosed = true
            pending = ByteBuffer()
            let w = waiters
            waiters = []
            return (wasOpen, w)
        }
        for x in w { x.resume() }
        return wasOpen
    }

    /// Drops anything pending without closing (a client discarding stale frames before reconnecting).
    public func discardPending() {
        lock.withLock { pending.clear() }
    }
}

/// Flushes owed by one burst of `enqueue(flushingIn:)`: each buffer appears once (only the enqueue
/// that found no flush scheduled adds it), and `run` schedules them all. Reused across bursts, so a
/// burst costs no allocation once the array has grown to the fan-out.
public struct FlushBatch {
    fileprivate var buffers: [OutboundBuffer] = []

    public init() {}

    public var isEmpty: Bool { buffers.isEmpty }
    /// Buffers owed a flush.
    public var count: Int { buffers.count }

    /// Schedules every owed flush. Must run after each burst: until it does, the buffers in it hold
    /// their frames.
    public mutating func run() {
        for buffer in buffers { buffer.scheduleFlush() }
        buffers.removeAll(keepingCapacity: true)
    }
}
