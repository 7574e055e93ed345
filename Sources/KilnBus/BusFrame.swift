import NIOCore

/// One bus frame: a parsed header and the untouched payload bytes (design §2).
///
/// ```
/// u32 BE  L  (bytes after this field)
/// u32 BE  H  (header length, H ≤ L − 4)
/// H bytes    header: a JSON object
/// L−4−H      payload
/// ```
public struct BusFrame: Sendable {
    public var header: BusHeader
    public var payload: ByteBuffer

    public init(header: BusHeader, payload: ByteBuffer = ByteBuffer()) {
        self.header = header
        self.payload = payload
    }

    /// Upper bound for a header; keeps a hostile peer from making us parse megabytes of JSON.
    public static let maxHeaderLength = 64 * 1024
    /// Default cap on L.
    public static let defaultMaxFrame = 8 * 1024 * 1024

    /// Appends the encoded frame to `buffer`.
    public func write(to buffer: inout ByteBuffer) {
        BusFrame.write(header: header, payload: payload.readableBytesView, to: &buffer)
    }

    /// Encodes a frame without building a `BusFrame` first; the header's length is patched in after
    /// writing it, so the header JSON is produced straight into the output buffer.
    public static func write<Payload: Collection>(header: BusHeader, payload: Payload, to buffer: inout ByteBuffer)
    where Payload.Element == UInt8 {
        let start = buffer.writerIndex
        buffer.writeInteger(UInt32(0))
        buffer.writeInteger(UInt32(0))
        let headerStart = buffer.writerIndex
        header.write(to: &buffer)
        let headerLength = buffer.writerIndex - headerStart
        buffer.writeBytes(payload)
        buffer.setInteger(UInt32(buffer.writerIndex - start - 4), at: start)
        buffer.setInteger(UInt32(headerLength), at: start + 4)
    }

    /// The encoded bytes of this frame.
    public var encoded: ByteBuffer {
        var buffer = ByteBuffer()
        write(to: &buffer)
        return buffer
    }
}
