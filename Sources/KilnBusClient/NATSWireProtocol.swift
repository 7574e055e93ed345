import KilnBus
import NIOCore

/// The NATS client protocol (https://docs.nats.io/reference/reference-protocols/nats-protocol), so a
/// farm can run its bus on a nats-server cluster (#15): text control lines ending in CRLF, payloads
/// sized by the control line, headers (`HPUB`/`HMSG`, `NATS/1.0` blocks) for Kiln's request headers
/// and for no-responders (status 503). Everything above this seam — subscriptions, request/reply,
/// reconnect, back-pressure — is the same `BusClient` that speaks Kiln bus v1.
struct NATSWireProtocol: BusWireProtocol {
    /// nats-server's default `max_payload`.
    var defaultMaxFrame: Int { 1 << 20 }
    /// The client's version, sent in `CONNECT`.
    var version = "1"

    func makeDecoder() -> NATSInboundDecoder { NATSInboundDecoder() }

    func writeGreeting(_ configuration: BusClient.Configuration, answering greeting: ServerGreeting, to buffer: inout ByteBuffer) throws {
        var fields: [(String, String)] = [
            ("verbose", "false"), ("pedantic", "false"), ("lang", "\"swift-kiln\""), ("version", "\"\(version)\""), ("protocol", "1"),
            ("headers", "true"), ("no_responders", "true"),
        ]
        if let name = configuration.name { fields.append(("name", Self.jsonString(name))) }
        if let token = configuration.token { fields.append(("auth_token", Self.jsonString(token))) }
        if let user = configuration.user { fields.append(("user", Self.jsonString(user))) }
        if let password = configuration.password { fields.append(("pass", Self.jsonString(password))) }
        if let user = configuration.natsCredentials {
            // A JWT login: the user's JWT and the server's nonce signed with its key.
            guard let nonce = greeting.nonce else {
                throw BusClientError.connectFailed("the NATS server sent no nonce to sign: it does not take JWT logins (operator mode)")
            }
            fields.append(("jwt", Self.jsonString(user.jwt)))
            fields.append(("sig", Self.jsonString(try user.signNonce(nonce))))
        }
        buffer.writeString("CONNECT {" + fields.map { "\"\($0.0)\":\($0.1)" }.joined(separator: ",") + "}\r\n")
    }

    func write(_ command: BusCommand, to buffer: inout ByteBuffer) {
        switch command {
        case .subscribe(let sid, let subject, let queue, let max):
            buffer.writeString("SUB \(subject) \(queue.map { $0 + " " } ?? "")\(sid)\r\n")
            // A one-shot (or n-shot) subscription: the server drops it after `max` deliveries.
            if let max { buffer.writeString("UNSUB \(sid) \(max)\r\n") }
        case .unsubscribe(let sid, let max):
            buffer.writeString("UNSUB \(sid)\(max.map { " \($0)" } ?? "")\r\n")
        case .ping:
            buffer.writeString("PING\r\n")
        }
    }

    func writePong(to buffer: inout ByteBuffer) { buffer.writeString("PONG\r\n") }

    func writePublish(subject: String, reply: String?, headers: [String: String]?, payload: some Collection<UInt8>, to buffer: inout ByteBuffer) -> Int {
        let replyPart = reply.map { $0 + " " } ?? ""
        guard let headers, !headers.isEmpty else {
            buffer.writeString("PUB \(subject) \(replyPart)\(payload.count)\r\n")
            buffer.writeBytes(payload)
            buffer.writeString("\r\n")
            return payload.count
        }
        var block = "NATS/1.0\r\n"
        // Kiln's header names and values are tokens; anything that could break the block is left out.
        for key in headers.keys.sorted() {
            let value = headers[key]!
            guard !key.isEmpty, !key.contains(where: { $0 == ":" || $0.isNewline || $0 == " " }), !value.contains(where: \.isNewline) else { continue }
            block += "\(key): \(value)\r\n"
        }
        block += "\r\n"
        let headerBytes = block.utf8.count
        buffer.writeString("HPUB \(subject) \(replyPart)\(headerBytes) \(headerBytes + payload.count)\r\n")
        buffer.writeString(block)
        buffer.writeBytes(payload)
        buffer.writeString("\r\n")
        return headerBytes + payload.count
    }

    static func jsonString(_ s: String) -> String {
        var out = "\""
        for scalar in s.unicodeScalars {
            switch scalar {
            case "\"": out += "\\\""
            case "\\": out += "\\\\"
            case _ where scalar.value < 0x20:
                let hex = String(scalar.value, radix: 16)
                out += "\\u" + String(repeating: "0", count: 4 - hex.count) + hex
            default: out.unicodeScalars.append(scalar)
            }
        }
        return out + "\""
    }
}
