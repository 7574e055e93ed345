import NIOCore

// A purpose-built JSON reader/writer for frame headers. Headers are small flat objects; parsing them
// with Foundation's JSONDecoder costs microseconds and several allocations per frame, which would cap
// the broker far below nats-server. This reader scans the bytes once, materialises only the fields it
// knows, skips everything else (unknown fields are ignored for forward compatibility) and reports the
// first field with the wrong type.

extension BusHeader {
    /// Parses a header from its JSON bytes.
    /// - Throws: `BusError` (400) naming what is wrong: not JSON, not an object, no/unknown `op`,
    ///   a field of the wrong type.
    public static func parse(_ bytes: UnsafeRawBufferPointer) throws(BusError) -> BusHeader {
        var reader = JSONHeaderReader(bytes: bytes)
        return try reader.readHeader()
    }

    public static func parse(_ buffer: ByteBuffer) throws(BusError) -> BusHeader {
        do {
            return try buffer.withUnsafeReadableBytes { try BusHeader.parse($0) }
        } catch let error as BusError {
            throw error
        } catch {
            throw .badRequest("\(error)")
        }
    }

    /// Appends the header as compact JSON.
    public func write(to buffer: inout ByteBuffer) {
        buffer.writeStaticString("{\"op\":\"")
        buffer.writeString(op.rawValue)
        buffer.writeInteger(UInt8(ascii: "\""))
        buffer.writeJSONField("subject", subject)
        buffer.writeJSONField("sid", sid)
        buffer.writeJSONField("reply", reply)
        buffer.writeJSONField("queue", queue)
        if let max { buffer.writeJSONField("max", max) }
        if let headers {
            buffer.writeStaticString(",\"headers\":{")
            var first = true
            for key in headers.keys.sorted() {
                if !first { buffer.writeInteger(UInt8(ascii: ",")) }
                first = false
                buffer.writeJSONString(key)
                buffer.writeInteger(UInt8(ascii: ":"))
                buffer.writeJSONString(headers[key]!)
            }
            buffer.writeInteger(UInt8(ascii: "}"))
        }
        buffer.writeJSONField("name", name)
        buffer.writeJSONField("token", token)
        buffer.writeJSONField("user", user)
        buffer.writeJSONField("password", password)
        if let verbose { buffer.writeJSONField("verbose", verbose) }
        if let proto { buffer.writeJSONField("proto", proto) }
        buffer.writeJSONField("server_id", serverID)
        buffer.writeJSONField("version", version)
        if let maxFrame { buffer.writeJSONField("max_frame", maxFrame) }
        if let authRequired { buffer.writeJSONField("auth_required", authRequired) }
        if let code { buffer.writeJSONField("code", code) }
        buffer.writeJSONField("message", message)
        buffer.writeInteger(UInt8(ascii: "}"))
    }

    /// The header as compact JSON text (tests, logs, documentation).
    public var jsonText: String {
        var buffer = ByteBuffer()
        write(to: &buffer)
        return String(buffer: buffer)
    }
}

extension ByteBuffer {
    @inlinable
    mutating func writeJSONField(_ key: StaticString, _ value: String?) {
        guard let value else { return }
        writeStaticString(",\"")
        writeStaticString(key)
        writeStaticString("\":")
        writeJSONString(value)
    }

    @inlinable
    mutating func writeJSONField(_ key: StaticString, _ value: Int) {
        writeStaticString(",\"")
        writeStaticString(key)
        writeStaticString("\":")
        writeString(String(value))
    }

    @inlinable
    mutating func writeJSONField(_ key: StaticString, _ value: Bool) {
        writeStaticString(",\"")
        writeStaticString(key)
        writeStaticString("\":")
        writeStaticString(value ? "true" : "false")
    }

    /// Writes `value` as a JSON string literal, escaping only what JSON requires.
    public mutating func writeJSONString(_ value: String) {
        writeInteger(UInt8(ascii: "\""))
        var needsEscape = false
        for byte in value.utf8 where byte < 0x20 || byte == UInt8(ascii: "\"") || byte == UInt8(ascii: "\\") {
            needsEscape = true
            break
        }
        if !needsEscape {
            writeString(value)
        } else {
            for byte in value.utf8 {
                switch byte {
                case UInt8(ascii: "\""): writeStaticString("\\\"")
                case UInt8(ascii: "\\"): writeStaticString("\\\\")
                case 0x0A: writeStaticString("\\n")
                case 0x0D: writeStaticString("\\r")
                case 0x09: writeStaticString("\\t")
                case 0..<0x20:
                    let hex: [UInt8] = Array("0123456789abcdef".utf8)
                    writeStaticString("\\u00")
                    writeInteger(hex[Int(byte >> 4)])
                    writeInteger(hex[Int(byte & 0xF)])
                default: writeInteger(byte)
                }
            }
        }
        writeInteger(UInt8(ascii: "\""))
    }
}
