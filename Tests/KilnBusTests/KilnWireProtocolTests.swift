import NIOCore
import Testing

@testable import KilnBus
@testable import KilnBusClient

/// The Kiln bus v1 side of the client's wire seam: what it writes is what the broker's decoder reads,
/// and what a broker sends becomes the protocol-neutral `BusInbound`.
@Suite struct KilnWireProtocolTests {
    let wire = KilnWireProtocol()

    func frames(_ buffer: ByteBuffer) throws -> [BusFrame] {
        var decoder = FrameDecoder(maxFrame: 1 << 20)
        decoder.append(buffer)
        var out: [BusFrame] = []
        while let decoded = try decoder.next() {
            if case .frame(let f) = decoded { out.append(f) }
        }
        return out
    }

    @Test func commandsGreetingAndPublishesAreFramesTheBrokerReads() throws {
        var buffer = ByteBuffer()
        var configuration = BusClient.Configuration(host: "h", port: 1, name: "gw", token: "t0k")
        configuration.user = nil
        wire.writeGreeting(configuration, answering: ServerGreeting(), to: &buffer)
        wire.write(.subscribe(sid: "7", subject: "kiln.>", queue: "q", max: 2), to: &buffer)
        wire.write(.unsubscribe(sid: "7", max: 5), to: &buffer)
        wire.write(.unsubscribe(sid: "7", max: nil), to: &buffer)
        wire.write(.ping, to: &buffer)
        let size = wire.writePublish(subject: "a.b", reply: "_INBOX.x.1", headers: ["k": "v"], payload: [1, 2, 3], to: &buffer)
        let f = try frames(buffer)
        #expect(f.map(\.header.op) == [.connect, .sub, .unsub, .unsub, .ping, .pub])
        #expect(f[0].header.name == "gw" && f[0].header.token == "t0k" && f[0].header.proto == 1)
        #expect(f[1].header.subject == "kiln.>" && f[1].header.sid == "7" && f[1].header.queue == "q" && f[1].header.max == 2)
        #expect(f[2].header.max == 5 && f[3].header.max == nil)
        #expect(f[5].header.subject == "a.b" && f[5].header.reply == "_INBOX.x.1" && f[5].header.headers == ["k": "v"])
        #expect(Array(f[5].payload.readableBytesView) == [1, 2, 3])
        var lone = ByteBuffer()
        #expect(wire.writePublish(subject: "a.b", reply: nil, headers: nil, payload: [UInt8](repeating: 0, count: 10), to: &lone) == lone.readableBytes - 4)
        #expect(size > 3)
    }

    @Test func brokerFramesBecomeInboundEvents() throws {
        var buffer = ByteBuffer()
        var info = BusHeader(op: .info)
        info.maxFrame = 4096
        BusFrame.write(header: info, payload: EmptyCollection(), to: &buffer)
        BusFrame.write(header: BusHeader(op: .ping), payload: EmptyCollection(), to: &buffer)
        BusFrame.write(header: BusHeader(op: .pong), payload: EmptyCollection(), to: &buffer)
        var err = BusHeader(op: .err)
        err.code = 403
        err.message = "permission denied"
        BusFrame.write(header: err, payload: EmptyCollection(), to: &buffer)
        var msg = BusHeader(op: .msg)
        msg.subject = "a.b"
        msg.sid = "3"
        msg.reply = "r"
        BusFrame.write(header: msg, payload: [9, 8], to: &buffer)
        BusFrame.write(header: BusHeader(op: .ok), payload: EmptyCollection(), to: &buffer)
        var decoder = wire.makeDecoder()
        decoder.append(buffer)
        var seen: [String] = []
        while let inbound = try decoder.next() {
            switch inbound {
            case .hello(let greeting): seen.append("hello \(greeting.maxFrame ?? -1)")
            case .ping: seen.append("ping")
            case .pong: seen.append("pong")
            case .error(let e): seen.append("error \(e.code) \(e.message)")
            case .message(let sid, let m): seen.append("msg \(sid) \(m.subject) \(m.reply ?? "") \(m.payloadBytes)")
            case .ignored: seen.append("ignored")
            }
        }
        #expect(seen == ["hello 4096", "ping", "pong", "error 403 permission denied", "msg 3 a.b r [9, 8]", "ignored"])
    }
}
