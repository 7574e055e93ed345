import KilnJobs
import NIOCore

/// One event as an SSE client receives it (`id:` = seq, `event:` = type, `data:` = JSON), encoded
/// once by the hub and shared by every client of the job (a `ByteBuffer` copy shares its storage).
public struct SSEFrame: Sendable {
    public let seq: Int
    public let isTerminal: Bool
    public let bytes: ByteBuffer

    public init(_ event: StoredEvent) {
        seq = event.seq
        isTerminal = event.isTerminal
        var b = ByteBuffer()
        b.reserveCapacity(event.data.utf8.count + event.type.utf8.count + 32)
        b.writeStaticString("id: ")
        b.writeString(String(event.seq))
        b.writeStaticString("\nevent: ")
        b.writeString(event.type)
        b.writeStaticString("\ndata: ")
        b.writeString(event.data)
        b.writeStaticString("\n\n")
        bytes = b
    }
}
