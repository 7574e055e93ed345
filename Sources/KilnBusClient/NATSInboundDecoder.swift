import KilnBus
import NIOCore

/// Decodes what a nats-server sends: `INFO`, `MSG`, `HMSG`, `PING`, `PONG`, `+OK`, `-ERR`.
///
/// Bounded like the Kiln decoder: a control line longer than `maxControlLine` or a payload larger than
/// `maxPayload` is a protocol error, and every number is range-checked before it sizes anything. A
/// message whose payload has not fully arrived keeps its parsed control line, so a large payload
/// arriving in many reads is not re-parsed.
struct NATSInboundDecoder: BusInboundDecoder {
    var maxControlLine = 64 * 1024
    var maxPayload = 64 << 20
    private var buffer = ByteBuffer()
    private var pending: PendingMessage?

    private struct PendingMessage {
        var subject: String
        var sid: String
        var reply: String?
        var headerBytes: Int
        var totalBytes: Int
    }

    mutating func append(_ bytes: ByteBuffer) {
        var bytes = bytes
        buffer.writeBuffer(&bytes)
    }

    mutating func compact() { buffer.discardReadBytes() }

    mutating func next() throws(BusError) -> BusInbound? {
        if let message = pending {
            // The payload and its trailing CRLF.
            guard buffer.readableBytes >= message.totalBytes + 2 else { return nil }
            pending = nil
            return try take(message)
        }
        guard let line = try readControlLine() else { return nil }
        let parts = line.split(separator: " ", omittingEmptySubsequences: true)
        guard let op = parts.first?.uppercased() else { return .ignored }
        switch op {
        case "PING": return .ping
        case "PONG": return .pong
        case "+OK": return .ignored
        case "-ERR":
            let text = line.dropFirst(4).trimmingCharacters(in: " '")
            let code = Self.code(for: text)
            // nats-server keeps the connection after a permissions violation and closes it after anything else.
            return .error(BusError(code: code, message: text, isFatal: code != 403))
        case "INFO":
            let json = line.dropFirst(4)
            return .hello(ServerGreeting(maxFrame: Self.maxPayload(inInfo: json), nonce: Self.nonce(inInfo: json)))
        case "MSG", "HMSG":
            // MSG <subject> <sid> [reply] <#bytes>; HMSG <subject> <sid> [reply] <#header bytes> <#total bytes>
            let withHeaders = op == "HMSG"
            let counts = withHeaders ? 2 : 1
            guard parts.count == 3 + counts || parts.count == 4 + counts else { throw Self.violation("malformed \(op) line") }
            let sizes = parts.suffix(counts).map { Int($0) }
            guard let total = sizes.last ?? nil, total >= 0, total <= maxPayload else { throw Self.violation("\(op) payload size out of range") }
            let headerBytes = withHeaders ? (sizes.first ?? nil) ?? -1 : 0
            guard headerBytes >= 0, headerBytes <= total else { throw Self.violation("\(op) header size out of range") }
            let message = PendingMessage(
                subject: String(parts[1]), sid: String(parts[2]), reply: parts.count == 4 + counts ? String(parts[3]) : nil,
                headerBytes: headerBytes, totalBytes: total)
            guard buffer.readableBytes >= total + 2 else {
                pending = message
                return nil
            }
            return try take(message)
        default:
            throw Self.violation("unknown operation '\(op.prefix(16))'")
        }
    }

    private mutating func take(_ m: PendingMessage) throws(BusError) -> BusInbound {
        var headers: [String: String]?
        if m.headerBytes > 0 {
            guard let block = buffer.readString(length: m.headerBytes) else { throw Self.violation("short header block") }
            headers = try Self.parseHeaders(block)
        }
        guard let payload = buffer.readSlice(length: m.totalBytes - m.headerBytes),
            buffer.readInteger(as: UInt8.self) == 13, buffer.readInteger(as: UInt8.self) == 10
        else { throw Self.violation("a payload not followed by CRLF") }
        return .message(sid: m.sid, BusMessage(subject: m.subject, reply: m.reply, headers: headers, payload: payload))
    }

    /// The next CRLF-terminated line (without it), or nil when it has not fully arrived.
    private mutating func readControlLine() throws(BusError) -> String? {
        let view = buffer.readableBytesView
        guard let lf = view.firstIndex(of: 10) else {
            if view.count > maxControlLine { throw Self.violation("a control line longer than \(maxControlLine) bytes") }
            return nil
        }
        let length = lf - view.startIndex
        guard length <= maxControlLine else { throw Self.violation("a control line longer than \(maxControlLine) bytes") }
        let line = buffer.readString(length: length) ?? ""
        buffer.moveReaderIndex(forwardBy: 1)
        return line.hasSuffix("\r") ? String(line.dropLast()) : line
    }

    /// `NATS/1.0[ status[ description]]` then `Key: Value` lines; the status becomes `status`.
    static func parseHeaders(_ block: String) throws(BusError) -> [String: String] {
        var lines = block.split(separator: "\r\n", omittingEmptySubsequences: true).makeIterator()
        guard let first = lines.next(), first.hasPrefix("NATS/1.0") else { throw violation("a header block without NATS/1.0") }
        var headers: [String: String] = [:]
        let status = first.dropFirst(8).split(separator: " ", maxSplits: 1)
        if let code = status.first { headers["status"] = String(code) }
        if status.count > 1 { headers["description"] = String(status[1]) }
        while let line = lines.next() {
            guard let colon = line.firstIndex(of: ":") else { continue }
            let key = String(line[..<colon]).trimmingCharacters(in: " ")
            // Multi-valued NATS headers: Kiln's headers have one value each, the first one counts.
            if headers[key] == nil { headers[key] = String(line[line.index(after: colon)...]).trimmingCharacters(in: " ") }
        }
        return headers
    }

    /// `max_payload` from an `INFO` JSON object, found without a JSON parser: the server is the
    /// broker the operator configured, and a missing or odd value falls back to the default.
    static func maxPayload(inInfo json: Substring) -> Int? {
        guard let key = json.range(of: "\"max_payload\"") else { return nil }
        let digits = json[key.upperBound...].drop { $0 == " " || $0 == ":" }.prefix { $0.isASCII && $0.isNumber }
        guard let value = Int(digits), value > 0, value <= 64 << 20 else { return nil }
        return value
    }

    /// `nonce` from an `INFO` (present when the server accepts nkey or JWT logins): at most 128
    /// base64url characters, else none — a client never signs bytes it cannot name.
    static func nonce(inInfo json: Substring) -> String? {
        guard let key = json.range(of: "\"nonce\"") else { return nil }
        let rest = json[key.upperBound...].drop { $0 == " " || $0 == ":" }
        guard rest.first == "\"" else { return nil }
        let value = rest.dropFirst().prefix { $0 != "\"" }
        guard !value.isEmpty, value.count <= 128,
            value.utf8.allSatisfy({ ($0 >= 48 && $0 <= 57) || ($0 >= 65 && $0 <= 90) || ($0 >= 97 && $0 <= 122) || $0 == 45 || $0 == 95 })
        else { return nil }
        return String(value)
    }

    static func code(for text: String) -> Int {
        let lower = text.lowercased()
        if lower.contains("authorization") || lower.contains("authentication") { return 401 }
        if lower.contains("permissions violation") { return 403 }
        if lower.contains("maximum payload") { return 413 }
        if lower.contains("slow consumer") { return 429 }
        return 400
    }

    static func violation(_ message: String) -> BusError { BusError(code: 400, message: "NATS protocol: " + message, isFatal: true) }
}

extension StringProtocol {
    fileprivate func trimmingCharacters(in set: String) -> String {
        let chars = Set(set)
        return String(self.drop { chars.contains($0) }.reversed().drop { chars.contains($0) }.reversed())
    }
}
