import KilnBus
import NIOCore

/// What the client sends, whatever the wire protocol.
enum BusCommand: Equatable, Sendable {
    case subscribe(sid: String, subject: String, queue: String?, max: Int?)
    case unsubscribe(sid: String, max: Int?)
    case ping
}

/// What a server's greeting says that the client's answer depends on.
struct ServerGreeting: Sendable, Equatable {
    /// The largest frame it accepts (nil: the protocol's default).
    var maxFrame: Int?
    /// nats-server's challenge for nkey/JWT logins: signed with the user's key in `CONNECT`.
    var nonce: String?
}

/// What the broker said, whatever the wire protocol.
enum BusInbound: Sendable {
    /// The server's greeting.
    case hello(ServerGreeting)
    case ping
    case pong
    case error(BusError)
    case message(sid: String, BusMessage)
    /// Anything the client has no use for (`+ok`, frames only a server receives).
    case ignored
}

/// The bytes a bus client exchanges with its broker. Kiln bus v1 (`KilnWireProtocol`) is the one in
/// use; a second protocol (NATS, #15) implements this and nothing above it changes: subscriptions,
/// request/reply, reconnect and back-pressure live in `BusClient` and `BusClientStateMachine`.
protocol BusWireProtocol: Sendable {
    associatedtype Decoder: BusInboundDecoder
    /// The largest frame a server accepts when its greeting does not say.
    var defaultMaxFrame: Int { get }
    func makeDecoder() -> Decoder
    /// The client's half of the greeting (credentials, name), sent once the server's hello arrived.
    func writeGreeting(_ configuration: BusClient.Configuration, answering greeting: ServerGreeting, to buffer: inout ByteBuffer) throws
    func write(_ command: BusCommand, to buffer: inout ByteBuffer)
    func writePong(to buffer: inout ByteBuffer)
    /// Writes a publish and returns the size the server's frame limit applies to.
    func writePublish(subject: String, reply: String?, headers: [String: String]?, payload: some Collection<UInt8>, to buffer: inout ByteBuffer) -> Int
}

/// Turns received bytes into `BusInbound` values.
protocol BusInboundDecoder {
    mutating func append(_ bytes: ByteBuffer)
    /// The next complete item, nil when more bytes are needed. Throws on a protocol violation.
    mutating func next() throws(BusError) -> BusInbound?
    /// Releases consumed bytes.
    mutating func compact()
}

/// Kiln bus v1 (docs/protocol.md): length-prefixed frames with a JSON header.
struct KilnWireProtocol: BusWireProtocol {
    var defaultMaxFrame: Int { BusFrame.defaultMaxFrame }

    func makeDecoder() -> Decoder { Decoder() }

    func writeGreeting(_ configuration: BusClient.Configuration, answering greeting: ServerGreeting, to buffer: inout ByteBuffer) {
        var connect = BusHeader(op: .connect)
        connect.name = configuration.name
        connect.token = configuration.token
        connect.user = configuration.user
        connect.password = configuration.password
        connect.verbose = false
        connect.proto = 1
        BusFrame.write(header: connect, payload: EmptyCollection(), to: &buffer)
    }

    func write(_ command: BusCommand, to buffer: inout ByteBuffer) {
        let header: BusHeader
        switch command {
        case .subscribe(let sid, let subject, let queue, let max): header = .sub(subject, sid: sid, queue: queue, max: max)
        case .unsubscribe(let sid, let max?): header = .unsub(sid: sid, max: max)
        case .unsubscribe(let sid, nil): header = .unsub(sid: sid)
        case .ping: header = BusHeader(op: .ping)
        }
        BusFrame.write(header: header, payload: EmptyCollection(), to: &buffer)
    }

    func writePong(to buffer: inout ByteBuffer) {
        BusFrame.write(header: BusHeader(op: .pong), payload: EmptyCollection(), to: &buffer)
    }

    func writePublish(subject: String, reply: String?, headers: [String: String]?, payload: some Collection<UInt8>, to buffer: inout ByteBuffer) -> Int {
        let start = buffer.writerIndex
        BusFrame.write(header: .pub(subject, reply: reply, headers: headers), payload: payload, to: &buffer)
        return buffer.writerIndex - start - 4  // the length prefix is not part of the frame
    }

    struct Decoder: BusInboundDecoder {
        // The client trusts its broker's frame sizes; the broker enforces its own limit on what it accepts.
        private var frames = FrameDecoder(maxFrame: Int(UInt32.max))

        mutating func append(_ bytes: ByteBuffer) { frames.append(bytes) }

        mutating func next() throws(BusError) -> BusInbound? {
            guard let decoded = try frames.next() else { return nil }
            guard case .frame(let frame) = decoded else { return .ignored }
            let header = frame.header
            switch header.op {
            case .info: return .hello(ServerGreeting(maxFrame: header.maxFrame))
            case .ping: return .ping
            case .pong: return .pong
            case .err: return .error(BusError(code: header.code ?? 0, message: header.message ?? ""))
            case .msg:
                guard let sid = header.sid, let subject = header.subject else { return .ignored }
                return .message(sid: sid, BusMessage(subject: subject, reply: header.reply, headers: header.headers, payload: frame.payload))
            case .ok, .connect, .pub, .sub, .unsub: return .ignored
            }
        }

        mutating func compact() { frames.compact() }
    }
}
