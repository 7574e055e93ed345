import Foundation
import KilnBus
import KilnCoordination
import KilnFuzzSupport
import KilnMessages
import NIOCore

/// What the gateway does with messages from the bus before it touches its store: frames decoded as
/// the bus client does, then each read as an event, a result chunk (random headers: indices, counts,
/// sizes near the integer limits) and a source request. Any trap is a bug.
enum FuzzGatewayMessagesTarget {
    static func run(_ input: [UInt8]) {
        var decoder = FrameDecoder(maxFrame: 1 << 20)
        decoder.append(ByteBuffer(bytes: input))
        while true {
            guard let decoded = try? decoder.next(), case .frame(let frame) = decoded else { return }
            let subject = frame.header.subject ?? ""
            let payload = Array(frame.payload.readableBytesView)
            _ = try? BuildEvent.decode(payload)
            _ = BusMessageParsing.jobID(subject: subject)
            for maxSize in [Int64(0), 1, 16 << 30, .max] {
                _ = BusMessageParsing.resultChunk(subject: subject, headers: frame.header.headers, payloadCount: payload.count, maxSize: maxSize)
            }
            if let (_, index) = BusMessageParsing.sourceRequest(subject: subject, headers: frame.header.headers) {
                for size in [Int64(0), 1, 1 << 20, .max] {
                    for chunk in [1, 1 << 20, .max] { _ = BusMessageParsing.sourceChunkOffset(index: index, chunkSize: chunk, size: size) }
                }
            }
            _ = try? JSONDecoder().decode(DispatchReply.self, from: Data(payload))
        }
    }
}

@main
enum FuzzGatewayMessagesMain {
    static func main() { FuzzDriver.run(FuzzGatewayMessagesTarget.run) }
}
