import NIOCore

/// What one SSE client has been sent: events go out in `seq` order, each exactly once, and
/// nothing after the terminal event.
struct SSEStream {
    private(set) var last: Int
    var finished = false

    init(after: Int) { last = after }

    /// The frame's bytes if it is the next one to send.
    mutating func take(_ frame: SSEFrame) -> ByteBuffer? {
        guard !finished, frame.seq == last + 1 else { return nil }
        last = frame.seq
        if frame.isTerminal { finished = true }
        return frame.bytes
    }

    /// Appends every frame that is next in turn to `buffer` (one write per batch).
    mutating func append(_ frames: [SSEFrame], to buffer: inout ByteBuffer) {
        for frame in frames {
            if var bytes = take(frame) { buffer.writeBuffer(&bytes) }
        }
    }
}
