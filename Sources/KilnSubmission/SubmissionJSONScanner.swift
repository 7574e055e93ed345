import Foundation

/// Reads a JSON `POST /build` body as it arrives: an object of string fields (and a few structured
/// ones, kept as raw JSON), one of which
/// (`source_data`) may be a base64 archive of hundreds of MiB. That field is decoded straight into
/// the caller's output as bytes arrive; every other field is kept only up to `maxFieldBytes`, and
/// values of fields Kiln does not know are skipped without being stored. A pure state machine:
/// bytes in, archive bytes and fields out, no I/O, so memory per upload stays a few KiB whatever
/// the body's size.
public struct SubmissionJSONScanner: Sendable {
    static let archiveField = "source_data"
    static let knownFields: Set<String> = ["nonce", "repo_url", "repo_ref", "source_data", "source_name"]
    /// Fields whose value is any JSON (an object, a boolean): kept as their raw JSON text, bounded like
    /// strings, and decoded by `BuildSubmission`.
    static let structuredFields: Set<String> = ["skip_cache", "build_config", "build_options"]
    static let maxFieldBytes = 64 << 10
    static let maxKeyBytes = 256
    static let maxFields = 64

    /// The string fields other than the archive, decoded (a JSON `null` leaves a field out).
    public private(set) var fields: [String: String] = [:]
    /// Whether `source_data` was present as a string.
    public private(set) var sawArchive = false

    private enum State: Sendable {
        case start
        case beforeKey(first: Bool)
        case key
        case afterKey
        case beforeValue
        case text
        case archive
        case literal
        case skipString
        case nested(depth: Int, inString: Bool, capture: Bool)
        case afterValue
        case end
    }

    private var state = State.start
    private var escaped = false
    /// The current key's or small value's raw bytes (escapes not yet resolved).
    private var scratch: [UInt8] = []
    private var key = ""
    private var fieldCount = 0
    private var base64 = Base64StreamDecoder()
    /// Inside `source_data`: the hex digits of a `\u` escape being read (nil when not in one).
    private var unicodeEscape: [UInt8]?

    static let notJSON = SubmissionError("the body is not valid JSON")

    public init() {}

    /// Consumes the next piece of the body, appending decoded `source_data` bytes to `archive`.
    public mutating func consume(_ bytes: UnsafeRawBufferPointer, archive: inout [UInt8]) throws(SubmissionError) {
        var i = 0
        let n = bytes.count
        while i < n {
            let byte = bytes[i]
            switch state {
            case .start:
                if !Self.isWhitespace(byte) {
                    guard byte == UInt8(ascii: "{") else {
                        throw byte == UInt8(ascii: "[") || byte == UInt8(ascii: "\"") || Self.startsLiteral(byte)
                            ? SubmissionError("the JSON body must be an object") : Self.notJSON
                    }
                    state = .beforeKey(first: true)
                }
            case .beforeKey(let first):
                if Self.isWhitespace(byte) { break }
                if byte == UInt8(ascii: "}") && first {
                    state = .end
                    break
                }
                guard byte == UInt8(ascii: "\"") else { throw Self.notJSON }
                scratch.removeAll(keepingCapacity: true)
                escaped = false
                state = .key
            case .key:
                if escaped {
                    escaped = false
                } else if byte == UInt8(ascii: "\\") {
                    escaped = true
                } else if byte == UInt8(ascii: "\"") {
                    key = try Self.decodeString(scratch)
                    state = .afterKey
                    break
                }
                guard scratch.count < Self.maxKeyBytes else { throw SubmissionError("a JSON key is longer than \(Self.maxKeyBytes) bytes") }
                scratch.append(byte)
            case .afterKey:
                if Self.isWhitespace(byte) { break }
                guard byte == UInt8(ascii: ":") else { throw Self.notJSON }
                state = .beforeValue
            case .beforeValue:
                if Self.isWhitespace(byte) { break }
                fieldCount += 1
                guard fieldCount <= Self.maxFields else { throw SubmissionError("the JSON body has more than \(Self.maxFields) fields") }
                let known = Self.knownFields.contains(key)
                let structured = Self.structuredFields.contains(key)
                if (known || structured) && (fields[key] != nil || key == Self.archiveField && sawArchive) {
                    throw SubmissionError("field '\(key)' appears more than once")
                }
                scratch.removeAll(keepingCapacity: true)
                escaped = false
                if structured && (byte == UInt8(ascii: "{") || byte == UInt8(ascii: "[")) {
                    scratch.append(byte)
                    state = .nested(depth: 1, inString: false, capture: true)
                } else if structured && byte == UInt8(ascii: "\"") {
                    throw SubmissionError("field '\(key)' must be \(key == "skip_cache" ? "true or false" : "an object"), not a string")
                } else if byte == UInt8(ascii: "\"") {
                    if key == Self.archiveField {
                        sawArchive = true
                        state = .archive
                    } else {
                        state = known ? .text : .skipString
                    }
                } else if byte == UInt8(ascii: "{") || byte == UInt8(ascii: "[") {
                    guard !known else { throw SubmissionError("field '\(key)' must be a string") }
                    state = .nested(depth: 1, inString: false, capture: false)
                } else if Self.startsLiteral(byte) {
                    scratch.append(byte)
                    state = .literal
                } else {
                    throw Self.notJSON
                }
            case .text, .skipString:
                let keep: Bool
                if case .text = state { keep = true } else { keep = false }
                if escaped {
                    escaped = false
                } else if byte == UInt8(ascii: "\\") {
                    escaped = true
                } else if byte == UInt8(ascii: "\"") {
                    if keep { fields[key] = try Self.decodeString(scratch) }
                    state = .afterValue
                    break
                } else if byte < 0x20 {
                    throw Self.notJSON
                }
                if keep {
                    guard scratch.count < Self.maxFieldBytes else { throw SubmissionError("field '\(key)' is longer than \(Self.maxFieldBytes) bytes") }
                    scratch.append(byte)
                }
            case .archive:
                // The common case in one step: a run of plain base64 up to the next quote or escape.
                var end = i
                if unicodeEscape == nil && !escaped {
                    while end < n && bytes[end] != UInt8(ascii: "\"") && bytes[end] != UInt8(ascii: "\\") { end += 1 }
                }
                if end > i {
                    guard base64.decode(UnsafeRawBufferPointer(rebasing: bytes[i..<end]), into: &archive) else { throw Self.badBase64 }
                    i = end
                    continue
                }
                try archiveEscape(byte, archive: &archive)
            case .literal:
                if Self.isWhitespace(byte) || byte == UInt8(ascii: ",") || byte == UInt8(ascii: "}") {
                    try finishLiteral()
                    state = .afterValue
                    continue  // the delimiter is the next state's
                }
                guard scratch.count < 64 else { throw Self.notJSON }
                scratch.append(byte)
            case .nested(let depth, let inString, let capture):
                // An object or array value: skipped, or for a structured field kept (bounded).
                if capture {
                    guard scratch.count < Self.maxFieldBytes else { throw SubmissionError("field '\(key)' is longer than \(Self.maxFieldBytes) bytes") }
                    scratch.append(byte)
                }
                if inString {
                    if escaped {
                        escaped = false
                    } else if byte == UInt8(ascii: "\\") {
                        escaped = true
                    } else if byte == UInt8(ascii: "\"") {
                        state = .nested(depth: depth, inString: false, capture: capture)
                    }
                } else if byte == UInt8(ascii: "\"") {
                    state = .nested(depth: depth, inString: true, capture: capture)
                } else if byte == UInt8(ascii: "{") || byte == UInt8(ascii: "[") {
                    let limit = capture ? 8 : 64
                    guard depth < limit else {
                        throw SubmissionError(capture ? "field '\(key)' nests deeper than 8 levels" : "the JSON body nests deeper than 64 levels")
                    }
                    state = .nested(depth: depth + 1, inString: false, capture: capture)
                } else if byte == UInt8(ascii: "}") || byte == UInt8(ascii: "]") {
                    if depth > 1 {
                        state = .nested(depth: depth - 1, inString: false, capture: capture)
                    } else {
                        if capture { fields[key] = String(decoding: scratch, as: UTF8.self) }
                        state = .afterValue
                    }
                }
            case .afterValue:
                if Self.isWhitespace(byte) { break }
                if byte == UInt8(ascii: ",") {
                    state = .beforeKey(first: false)
                } else if byte == UInt8(ascii: "}") {
                    state = .end
                } else {
                    throw Self.notJSON
                }
            case .end:
                guard Self.isWhitespace(byte) else { throw Self.notJSON }
            }
            i += 1
        }
    }

    /// After the last byte: the object must be complete, and the archive's base64 must end on a whole byte.
    public mutating func finish(archive: inout [UInt8]) throws(SubmissionError) {
        guard case .end = state else { throw Self.notJSON }
        if sawArchive { guard base64.finish(into: &archive) else { throw Self.badBase64 } }
    }

    static let badBase64 = SubmissionError("source_data is not valid base64")

    /// An escape inside `source_data`: `\/` is a slash (encoders may write it so), `\n` `\r` `\t` are
    /// line breaks some encoders wrap base64 with, `\uXXXX` must be one of those or a base64 byte.
    private mutating func archiveEscape(_ byte: UInt8, archive: inout [UInt8]) throws(SubmissionError) {
        if var hex = unicodeEscape {
            guard let digit = Self.hexValue(byte) else { throw Self.badBase64 }
            hex.append(digit)
            if hex.count < 4 {
                unicodeEscape = hex
                return
            }
            unicodeEscape = nil
            let scalar = hex.reduce(0) { $0 << 4 | Int($1) }
            guard scalar < 0x80 else { throw Self.badBase64 }
            try feedArchive(UInt8(scalar), archive: &archive)
        } else if escaped {
            escaped = false
            switch byte {
            case UInt8(ascii: "/"): try feedArchive(byte, archive: &archive)
            case UInt8(ascii: "n"), UInt8(ascii: "r"), UInt8(ascii: "t"): break
            case UInt8(ascii: "u"): unicodeEscape = []
            default: throw Self.badBase64
            }
        } else if byte == UInt8(ascii: "\\") {
            escaped = true
        } else if byte == UInt8(ascii: "\"") {
            state = .afterValue
        }
    }

    private mutating func feedArchive(_ byte: UInt8, archive: inout [UInt8]) throws(SubmissionError) {
        if byte == 0x0A || byte == 0x0D || byte == 0x09 { return }
        let ok = withUnsafeBytes(of: byte) { base64.decode($0, into: &archive) }
        guard ok else { throw Self.badBase64 }
    }

    /// `null` leaves a known field unset; numbers, `true` and `false` are fine for unknown fields only.
    private mutating func finishLiteral() throws(SubmissionError) {
        let token = String(decoding: scratch, as: UTF8.self)
        let isNull = token == "null"
        guard isNull || token == "true" || token == "false" || Double(token) != nil else { throw Self.notJSON }
        if Self.structuredFields.contains(key) {
            if !isNull { fields[key] = token }
            return
        }
        if Self.knownFields.contains(key) && !isNull { throw SubmissionError("field '\(key)' must be a string") }
    }

    /// A JSON string's raw contents (between the quotes) with its escapes resolved.
    static func decodeString(_ raw: [UInt8]) throws(SubmissionError) -> String {
        if !raw.contains(UInt8(ascii: "\\")) {
            guard let s = String(validating: raw, as: UTF8.self) else { throw notJSON }
            return s
        }
        let quoted = Data([UInt8(ascii: "\"")] + raw + [UInt8(ascii: "\"")])
        guard let s = (try? JSONSerialization.jsonObject(with: quoted, options: .fragmentsAllowed)) as? String else { throw notJSON }
        return s
    }

    static func isWhitespace(_ b: UInt8) -> Bool { b == 0x20 || b == 0x0A || b == 0x0D || b == 0x09 }
    static func startsLiteral(_ b: UInt8) -> Bool {
        b == UInt8(ascii: "n") || b == UInt8(ascii: "t") || b == UInt8(ascii: "f") || b == UInt8(ascii: "-") || (b >= 0x30 && b <= 0x39)
    }
    static func hexValue(_ b: UInt8) -> UInt8? {
        switch b {
        case 0x30...0x39: b - 0x30
        case 0x41...0x46: b - 0x41 + 10
        case 0x61...0x66: b - 0x61 + 10
        default: nil
        }
    }
}
