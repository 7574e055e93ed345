import NIOCore

/// Incremental frame decoder: bytes in, frames out.
///
/// Pure (no channel, no I/O) so it can be tested by feeding input one byte at a time or split at every
/// offset. Both the broker and the client drive it from their NIO handlers.
public struct FrameDecoder: Sendable {
    /// Adjustable: a broker accepts only small frames until a connection has authenticated.
    public var maxFrame: Int
    private var cumulation: ByteBuffer?

    public init(maxFrame: Int = BusFrame.defaultMaxFrame) {
        self.maxFrame = maxFrame
    }

    /// Bytes received but not yet part of a whole frame.
    public var bufferedBytes: Int { cumulation?.readableBytes ?? 0 }

    public mutating func append(_ bytes: ByteBuffer) {
        if cumulation == nil || cumulation!.readableBytes == 0 {
            cumulation = bytes
        } else {
            var incoming = bytes
            cumulation!.writeBuffer(&incoming)
        }
    }

    /// The outcome of decoding one frame: either a frame, or a frame whose header was rejected.
    /// A rejected header does not desynchronise the stream (L is known), so the connection can carry on.
    public enum Decoded: Sendable {
        case frame(BusFrame)
        case invalid(BusError)
    }

    /// The next whole frame, or `nil` if more bytes are needed.
    /// - Throws: a fatal `BusError` when the stream cannot be trusted any more (L over `maxFrame`,
    ///   H over L − 4). The caller sends the error and closes.
    public mutating func next() throws(BusError) -> Decoded? {
        guard var buffer = cumulation, buffer.readableBytes >= 4 else { return nil }
        let length = Int(buffer.getInteger(at: buffer.readerIndex, as: UInt32.self)!)
        guard length <= maxFrame else { throw .frameTooLarge(length, max: maxFrame) }
        guard length >= 4 else { throw .badFraming("frame length \(length) is shorter than the 4-byte header length field") }
        guard buffer.readableBytes >= 4 + length else { return nil }
        buffer.moveReaderIndex(forwardBy: 4)
        var frame = buffer.readSlice(length: length)!
        // Release the cumulation once it is fully consumed, so a long-lived connection does not pin memory.
        cumulation = buffer.readableBytes == 0 ? nil : buffer
        let headerLength = Int(frame.readInteger(as: UInt32.self)!)
        guard headerLength <= length - 4 else {
            throw .badFraming("header length \(headerLength) exceeds the frame's \(length - 4) remaining bytes")
        }
        guard headerLength <= BusFrame.maxHeaderLength else {
            throw .badFraming("header length \(headerLength) exceeds the 64 KiB header limit")
        }
        let headerBytes = frame.readSlice(length: headerLength)!
        do {
            let header = try BusHeader.parse(headerBytes)
            return .frame(BusFrame(header: header, payload: frame))
        } catch {
            return .invalid(error)
        }
    }

    /// Discards partially received bytes if they hold onto a large buffer (called after reads).
    public mutating func compact() {
        if cumulation != nil, cumulation!.readerIndex > 64 * 1024 {
            cumulation!.discardReadBytes()
        }
    }
}
