import NIOCore

/// Single-pass reader over the header bytes.
struct JSONHeaderReader {
    let bytes: UnsafeRawBufferPointer
    var index = 0

    init(bytes: UnsafeRawBufferPointer) { self.bytes = bytes }

    private enum Scalar {
        case string(String)
        case int(Int)
        case bool(Bool)
        case null
        case other(String)  // a value of another kind, described for error messages
    }

    mutating func readHeader() throws(BusError) -> BusHeader {
        skipWhitespace()
        guard index < bytes.count else { throw .badRequest("header is empty; expected a JSON object") }
        guard bytes[index] == UInt8(ascii: "{") else { throw .badRequest("header is not a JSON object") }
        index += 1
        var header = BusHeader(op: .ping)
        var opSeen = false
        skipWhitespace()
        if peek() == UInt8(ascii: "}") {
            index += 1
        } else {
            while true {
                skipWhitespace()
                let key = try readKey()
                skipWhitespace()
                try expect(UInt8(ascii: ":"))
                skipWhitespace()
                switch key {
                case .op?:
                    let raw = try stringValue(for: "op")
                    guard let raw, let op = BusHeader.Op(rawValue: raw) else {
                        throw .badRequest("unknown op '\(raw ?? "null")'")
                    }
                    header.op = op
                    opSeen = true
                case .subject?: header.subject = try stringValue(for: "subject")
                case .reply?: header.reply = try stringValue(for: "reply")
                case .sid?: header.sid = try stringValue(for: "sid")
                case .queue?: header.queue = try stringValue(for: "queue")
                case .max?: header.max = try intValue(for: "max")
                case .headers?: header.headers = try stringMap(for: "headers")
                case .name?: header.name = try stringValue(for: "name")
                case .token?: header.token = try stringValue(for: "token")
                case .user?: header.user = try stringValue(for: "user")
                case .password?: header.password = try stringValue(for: "password")
                case .verbose?: header.verbose = try boolValue(for: "verbose")
                case .proto?: header.proto = try intValue(for: "proto")
                case .serverID?: header.serverID = try stringValue(for: "server_id")
                case .version?: header.version = try stringValue(for: "version")
                case .maxFrame?: header.maxFrame = try intValue(for: "max_frame")
                case .authRequired?: header.authRequired = try boolValue(for: "auth_required")
                case .code?: header.code = try intValue(for: "code")
                case .message?: header.message = try stringValue(for: "message")
                case nil: try skipValue(depth: 0)
                }
                skipWhitespace()
                guard let c = peek() else { throw .badRequest("header JSON ends inside the object") }
                index += 1
                if c == UInt8(ascii: "}") { break }
                guard c == UInt8(ascii: ",") else { throw .badRequest("header is not valid JSON (expected ',' or '}' at byte \(index - 1))") }
            }
        }
        skipWhitespace()
        guard index == bytes.count else { throw .badRequest("header has trailing bytes after the JSON object") }
        guard opSeen else { throw .badRequest("header has no 'op' field") }
        return header
    }

    // MARK: typed values

    private mutating func stringValue(for key: String) throws(BusError) -> String? {
        switch try readScalar() {
        case .string(let s): return s
        case .null: return nil
        case .int: throw .badRequest("field '\(key)' must be a string, got a number")
        case .bool: throw .badRequest("field '\(key)' must be a string, got a boolean")
        case .other(let kind): throw .badRequest("field '\(key)' must be a string, got \(kind)")
        }
    }

    private mutating func intValue(for key: String) throws(BusError) -> Int? {
        switch try readScalar() {
        case .int(let v): return v
        case .null: return nil
        case .string: throw .badRequest("field '\(key)' must be an integer, got a string")
        case .bool: throw .badRequest("field '\(key)' must be an integer, got a boolean")
        case .other(let kind): throw .badRequest("field '\(key)' must be an integer, got \(kind)")
        }
    }

    private mutating func boolValue(for key: String) throws(BusError) -> Bool? {
        switch try readScalar() {
        case .bool(let v): return v
        case .null: return nil
        case .string: throw .badRequest("field '\(key)' must be a boolean, got a string")
        case .int: throw .badRequest("field '\(key)' must be a boolean, got a number")
        case .other(let kind): throw .badRequest("field '\(key)' must be a boolean, got \(kind)")
        }
    }

    private mutating func stringMap(for key: String) throws(BusError) -> [String: String]? {
        if peek() == UInt8(ascii: "n") {
            _ = try readScalar()
            return nil
        }
        guard peek() == UInt8(ascii: "{") else {
            throw .badRequest("field '\(key)' must be an object of string values")
        }
        index += 1
        var map: [String: String] = [:]
        skipWhitespace()
        if peek() == UInt8(ascii: "}") {
            index += 1
            return map
        }
        while true {
            skipWhitespace()
            let k = try readString()
            skipWhitespace()
            try expect(UInt8(ascii: ":"))
            skipWhitespace()
            guard case .string(let v) = try readScalar() else {
                throw .badRequest("field '\(key)' must be an object of string values ('\(k)' is not a string)")
            }
            map[k] = v
            skipWhitespace()
            guard let c = peek() else { throw .badRequest("header JSON ends inside '\(key)'") }
            index += 1
            if c == UInt8(ascii: "}") { return map }
            guard c == UInt8(ascii: ",") else { throw .badRequest("header is not valid JSON (inside '\(key)')") }
        }
    }

    // MARK: lexical

    /// The header fields this reader knows; matched on raw bytes so no String is built per key.
    enum Field: String, CaseIterable {
        case op, subject, reply, sid, queue, max, headers, name, token, user, password, verbose, proto
        case serverID = "server_id"
        case version
        case maxFrame = "max_frame"
        case authRequired = "auth_required"
        case code, message

        static let byLength: [[(Field, [UInt8])]] = {
            var table = [[(Field, [UInt8])]](repeating: [], count: 16)
            for f in Field.allCases { table[f.rawValue.utf8.count].append((f, Array(f.rawValue.utf8))) }
            return table
        }()
    }

    /// Reads an object key; nil for a key this reader does not know.
    private mutating func readKey() throws(BusError) -> Field? {
        guard peek() == UInt8(ascii: "\"") else { throw .badRequest("header is not valid JSON (expected a string at byte \(index))") }
        let start = index + 1
        var i = start
        while i < bytes.count {
            let c = bytes[i]
            if c == UInt8(ascii: "\"") { break }
            if c == UInt8(ascii: "\\") || c < 0x20 {
                // Rare: escapes in a key. Take the general path.
                return Field(rawValue: try readString())
            }
            i += 1
        }
        guard i < bytes.count else { throw .badRequest("header is not valid JSON (unterminated string)") }
        index = i + 1
        let length = i - start
        guard length < Field.byLength.count else { return nil }
        for (field, name) in Field.byLength[length] {
            var equal = true
            for k in 0..<length where bytes[start + k] != name[k] {
                equal = false
                break
            }
            if equal { return field }
        }
        return nil
    }

    @inline(__always) private func peek() -> UInt8? { index < bytes.count ? bytes[index] : nil }

    @inline(__always) private mutating func skipWhitespace() {
        while index < bytes.count {
            switch bytes[index] {
            case 0x20, 0x09, 0x0A, 0x0D: index += 1
            default: return
            }
        }
    }

    private mutating func expect(_ byte: UInt8) throws(BusError) {
        guard index < bytes.count, bytes[index] == byte else {
            throw .badRequest("header is not valid JSON (expected '\(Character(Unicode.Scalar(byte)))' at byte \(index))")
        }
        index += 1
    }

    private mutating func readScalar() throws(BusError) -> Scalar {
        guard let c = peek() else { throw .badRequest("header JSON ends where a value was expected") }
        switch c {
        case UInt8(ascii: "\""): return .string(try readString())
        case UInt8(ascii: "-"), UInt8(ascii: "0")...UInt8(ascii: "9"): return try readNumber()
        case UInt8(ascii: "t"):
            try readLiteral("true")
            return .bool(true)
        case UInt8(ascii: "f"):
            try readLiteral("false")
            return .bool(false)
        case UInt8(ascii: "n"):
            try readLiteral("null")
            return .null
        case UInt8(ascii: "{"):
            try skipValue(depth: 0)
            return .other("an object")
        case UInt8(ascii: "["):
            try skipValue(depth: 0)
            return .other("an array")
        default: throw .badRequest("header is not valid JSON (unexpected byte at \(index))")
        }
    }

    private mutating func readLiteral(_ literal: StaticString) throws(BusError) {
        let n = literal.utf8CodeUnitCount
        guard index + n <= bytes.count else { throw .badRequest("header is not valid JSON (truncated literal)") }
        let p = literal.utf8Start
        for i in 0..<n where bytes[index + i] != p[i] {
            throw .badRequest("header is not valid JSON (bad literal at byte \(index))")
        }
        index += n
    }

    private mutating func readNumber() throws(BusError) -> Scalar {
        let start = index
        var negative = false
        if bytes[index] == UInt8(ascii: "-") {
            negative = true
            index += 1
        }
        var value = 0
        var digits = 0
        var overflow = false
        while index < bytes.count, bytes[index] >= UInt8(ascii: "0"), bytes[index] <= UInt8(ascii: "9") {
            let (m, o1) = value.multipliedReportingOverflow(by: 10)
            let (a, o2) = m.addingReportingOverflow(Int(bytes[index] - UInt8(ascii: "0")))
            overflow = overflow || o1 || o2
            value = a
            digits += 1
            index += 1
        }
        guard digits > 0 else { throw .badRequest("header is not valid JSON (bad number at byte \(start))") }
        var isInteger = true
        if index < bytes.count, bytes[index] == UInt8(ascii: ".") {
            isInteger = false
            index += 1
            while index < bytes.count, bytes[index] >= UInt8(ascii: "0"), bytes[index] <= UInt8(ascii: "9") { index += 1 }
        }
        if index < bytes.count, bytes[index] == UInt8(ascii: "e") || bytes[index] == UInt8(ascii: "E") {
            isInteger = false
            index += 1
            if index < bytes.count, bytes[index] == UInt8(ascii: "+") || bytes[index] == UInt8(ascii: "-") { index += 1 }
            while index < bytes.count, bytes[index] >= UInt8(ascii: "0"), bytes[index] <= UInt8(ascii: "9") { index += 1 }
        }
        if !isInteger { return .other("a fractional number") }
        if overflow { return .other("a number out of range") }
        return .int(negative ? -value : value)
    }

    private mutating func readString() throws(BusError) -> String {
        guard peek() == UInt8(ascii: "\"") else { throw .badRequest("header is not valid JSON (expected a string at byte \(index))") }
        index += 1
        let start = index
        // Fast path: no escapes.
        while index < bytes.count {
            let c = bytes[index]
            if c == UInt8(ascii: "\"") {
                let s = String(decoding: UnsafeRawBufferPointer(rebasing: bytes[start..<index]), as: UTF8.self)
                index += 1
                return s
            }
            if c == UInt8(ascii: "\\") { break }
            if c < 0x20 { throw .badRequest("header is not valid JSON (control character in a string)") }
            index += 1
        }
        guard index < bytes.count else { throw .badRequest("header is not valid JSON (unterminated string)") }
        var out = Array(UnsafeRawBufferPointer(rebasing: bytes[start..<index]))
        while index < bytes.count {
            let c = bytes[index]
            index += 1
            if c == UInt8(ascii: "\"") { return String(decoding: out, as: UTF8.self) }
            if c < 0x20 { throw .badRequest("header is not valid JSON (control character in a string)") }
            guard c == UInt8(ascii: "\\") else {
                out.append(c)
                continue
            }
            guard index < bytes.count else { break }
            let e = bytes[index]
            index += 1
            switch e {
            case UInt8(ascii: "\""): out.append(0x22)
            case UInt8(ascii: "\\"): out.append(0x5C)
            case UInt8(ascii: "/"): out.append(0x2F)
            case UInt8(ascii: "b"): out.append(0x08)
            case UInt8(ascii: "f"): out.append(0x0C)
            case UInt8(ascii: "n"): out.append(0x0A)
            case UInt8(ascii: "r"): out.append(0x0D)
            case UInt8(ascii: "t"): out.append(0x09)
            case UInt8(ascii: "u"):
                var scalar = try readHex4()
                if (0xD800..<0xDC00).contains(scalar) {
                    guard index + 1 < bytes.count, bytes[index] == UInt8(ascii: "\\"), bytes[index + 1] == UInt8(ascii: "u") else {
                        throw .badRequest("header is not valid JSON (lone surrogate)")
                    }
                    index += 2
                    let low = try readHex4()
                    guard (0xDC00..<0xE000).contains(low) else { throw .badRequest("header is not valid JSON (bad surrogate pair)") }
                    scalar = 0x10000 + ((scalar - 0xD800) << 10) + (low - 0xDC00)
                }
                guard let u = Unicode.Scalar(scalar) else { throw .badRequest("header is not valid JSON (bad \\u escape)") }
                out.append(contentsOf: Array(String(Character(u)).utf8))
            default: throw .badRequest("header is not valid JSON (bad escape)")
            }
        }
        throw .badRequest("header is not valid JSON (unterminated string)")
    }

    private mutating func readHex4() throws(BusError) -> UInt32 {
        guard index + 4 <= bytes.count else { throw .badRequest("header is not valid JSON (short \\u escape)") }
        var v: UInt32 = 0
        for _ in 0..<4 {
            let c = bytes[index]
            index += 1
            let d: UInt32
            switch c {
            case UInt8(ascii: "0")...UInt8(ascii: "9"): d = UInt32(c - UInt8(ascii: "0"))
            case UInt8(ascii: "a")...UInt8(ascii: "f"): d = UInt32(c - UInt8(ascii: "a") + 10)
            case UInt8(ascii: "A")...UInt8(ascii: "F"): d = UInt32(c - UInt8(ascii: "A") + 10)
            default: throw .badRequest("header is not valid JSON (bad \\u escape)")
            }
            v = v << 4 | d
        }
        return v
    }

    /// Skips any JSON value (used for unknown fields). Depth-limited so hostile nesting cannot recurse deeply.
    private mutating func skipValue(depth: Int) throws(BusError) {
        guard depth < 32 else { throw .badRequest("header JSON nests deeper than 32 levels") }
        guard let c = peek() else { throw .badRequest("header JSON ends where a value was expected") }
        switch c {
        case UInt8(ascii: "{"), UInt8(ascii: "["):
            let close = c == UInt8(ascii: "{") ? UInt8(ascii: "}") : UInt8(ascii: "]")
            index += 1
            skipWhitespace()
            if peek() == close {
                index += 1
                return
            }
            while true {
                skipWhitespace()
                if close == UInt8(ascii: "}") {
                    _ = try readString()
                    skipWhitespace()
                    try expect(UInt8(ascii: ":"))
                    skipWhitespace()
                }
                try skipValue(depth: depth + 1)
                skipWhitespace()
                guard let n = peek() else { throw .badRequest("header JSON ends inside a value") }
                index += 1
                if n == close { return }
                guard n == UInt8(ascii: ",") else { throw .badRequest("header is not valid JSON (at byte \(index - 1))") }
            }
        default:
            _ = try readScalar()
        }
    }
}
