import KilnBus
import NIOCore
import NIOEmbedded
import Testing

/// `OutboundBuffer`'s batching: frames from many enqueues leave in one write, and a burst that defers
/// its flushes (`FlushBatch`, the broker's per-read batch) wakes the connection's loop once.
struct OutboundBufferTests {
    static func frame(_ byte: UInt8) -> (inout ByteBuffer) -> Void { { $0.writeBytes([byte, byte]) } }

    @Test func enqueuedFramesLeaveTogetherInOneWriteOnceTheLoopRuns() throws {
        let channel = EmbeddedChannel()
        let outbound = OutboundBuffer(channel: channel)
        #expect(outbound.enqueue(Self.frame(1)) == .queued(backlog: 0))
        #expect(outbound.enqueue(Self.frame(2)) == .queued(backlog: 0))
        #expect(try channel.readOutbound(as: ByteBuffer.self) == nil)
        channel.embeddedEventLoop.run()
        #expect(try channel.readOutbound(as: ByteBuffer.self) == ByteBuffer(bytes: [1, 1, 2, 2]))
        #expect(try channel.readOutbound(as: ByteBuffer.self) == nil)
    }

    @Test func aDeferredFlushWaitsForItsBatchAndIsOwedOnce() throws {
        let channel = EmbeddedChannel()
        let outbound = OutboundBuffer(channel: channel)
        var batch = FlushBatch()
        for byte in UInt8(1)...3 { outbound.enqueue(flushingIn: &batch, Self.frame(byte)) }
        #expect(batch.count == 1, "one flush owed per buffer, however many frames")
        channel.embeddedEventLoop.run()
        #expect(try channel.readOutbound(as: ByteBuffer.self) == nil, "nothing leaves before the batch runs")
        // Another sender meanwhile sees the flush as scheduled and joins the same write.
        outbound.enqueue(Self.frame(4))
        batch.run()
        #expect(batch.isEmpty)
        channel.embeddedEventLoop.run()
        #expect(try channel.readOutbound(as: ByteBuffer.self) == ByteBuffer(bytes: [1, 1, 2, 2, 3, 3, 4, 4]))
        // The next burst owes a flush again.
        outbound.enqueue(flushingIn: &batch, Self.frame(5))
        #expect(batch.count == 1)
        batch.run()
        channel.embeddedEventLoop.run()
        #expect(try channel.readOutbound(as: ByteBuffer.self) == ByteBuffer(bytes: [5, 5]))
    }

    @Test func aDetachedBufferOwesNoFlushAndSendsItsFramesOnAttach() throws {
        let outbound = OutboundBuffer()
        var batch = FlushBatch()
        #expect(outbound.enqueue(flushingIn: &batch, Self.frame(7)) == .queued(backlog: 2))
        #expect(batch.isEmpty)
        let channel = EmbeddedChannel()
        outbound.attach(channel)
        channel.embeddedEventLoop.run()
        #expect(try channel.readOutbound(as: ByteBuffer.self) == ByteBuffer(bytes: [7, 7]))
    }

    @Test func aClosedBufferRefusesFramesAndOwesNothing() {
        let outbound = OutboundBuffer(channel: EmbeddedChannel())
        outbound.close()
        var batch = FlushBatch()
        #expect(outbound.enqueue(flushingIn: &batch, Self.frame(1)) == .closed)
        #expect(batch.isEmpty)
    }
}
