import Foundation
import KilnBroker
import KilnBus
import KilnFuzzSupport
import NIOCore

/// The broker's hot path on hostile bytes: the frame decoder (length prefix, header JSON reader),
/// fed in pieces of varying size, and the connection state machine on every frame it yields.
/// Any trap, hang or sanitizer report is a bug; refusing input is fine.
enum FuzzBusFramesTarget {
    static func run(_ input: [UInt8]) {
        guard let first = input.first else { return }
        let step = Int(first % 64) + 1
        var decoder = FrameDecoder(maxFrame: 64 * 1024)
        var machine = ConnectionStateMachine(configuration: .init(authenticator: Authenticator(.token("t"))), now: .uptimeNanoseconds(0))
        var now = NIODeadline.uptimeNanoseconds(1)
        var offset = 1
        while offset < input.count {
            let end = min(input.count, offset + step)
            decoder.append(ByteBuffer(bytes: input[offset..<end]))
            offset = end
            while true {
                let decoded: FrameDecoder.Decoded?
                do { decoded = try decoder.next() } catch { return }  // fatal framing error: the connection would close
                guard let decoded else { break }
                now = now + .milliseconds(1)
                switch decoded {
                case .frame(let frame):
                    _ = machine.frameReceived(frame.header, now: now)
                    // What the broker would send back must encode.
                    var out = ByteBuffer()
                    frame.write(to: &out)
                case .invalid(let error):
                    _ = machine.invalidFrame(error, now: now)
                }
            }
            decoder.compact()
        }
        _ = machine.keepaliveTick(now: now + .seconds(60))
    }
}

@main
enum FuzzBusFramesMain {
    static func main() { FuzzDriver.run(FuzzBusFramesTarget.run) }
}
