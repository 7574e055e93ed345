import Foundation

/// A streaming `multipart/form-data` parser (RFC 2046 §5.1, RFC 7578): bytes in, in pieces of any
/// size; headers, body bytes and part ends out. Kiln's own because MultipartKit 4.7.1 traps on a
/// header-name byte ≥ 0x80 (a 128-entry table indexed by the byte: one request killed the gateway,
/// found by `FuzzSubmissionBodies`), and because its body scan calls back every few hundred bytes.
/// Here body bytes are found with `memchr` and handed over in runs; what is held between pieces is
/// at most one header line (`maxHeaderLine`) or a delimiter's length.
struct MultipartStreamParser {
    enum Event {
        /// A part's headers, complete (names as sent, values trimmed).
        case headers([(name: String, value: String)])
        /// Body bytes of the current part (valid only during the callback).
        case body(UnsafeRawBufferPointer)
        case partEnd
        /// The closing delimiter: nothing after it counts.
        case end
    }

    enum Failure: Error, CustomStringConvertible {
        case malformed(String)
        var description: String { if case .malformed(let m) = self { m } else { "" } }
    }

    static let maxHeaderLine = 8 << 10
    static let maxHeaders = 32

    private enum State { case preamble, afterDelimiter, headers, body, epilogue }

    /// `CRLF--boundary`: the body's first delimiter may lack the CRLF, so parsing starts as if one came before.
    private let delimiter: [UInt8]
    private var state = State.preamble
    private var carry: [UInt8]
    private var headers: [(name: String, value: String)] = []

    init(boundary: String) {
        delimiter = Array("\r\n--\(boundary)".utf8)
        carry = [0x0D, 0x0A]
    }

    var isFinished: Bool { if case .epilogue = state { true } else { false } }

    mutating func parse(_ piece: UnsafeRawBufferPointer, _ emit: (Event) throws -> Void) throws {
        if carry.isEmpty {
            try run(piece, emit)
        } else {
            var data = carry
            data.append(contentsOf: piece)
            carry = []
            try data.withUnsafeBytes { try run($0, emit) }
        }
    }

    private mutating func run(_ data: UnsafeRawBufferPointer, _ emit: (Event) throws -> Void) throws {
        var i = 0
        let n = data.count
        while i < n {
            switch state {
            case .epilogue:
                return
            case .preamble, .body:
                let inBody: Bool
                if case .body = state { inBody = true } else { inBody = false }
                if let k = Self.find(delimiter, in: data, from: i) {
                    if inBody {
                        if k > i { try emit(.body(UnsafeRawBufferPointer(rebasing: data[i..<k]))) }
                        try emit(.partEnd)
                    }
                    i = k + delimiter.count
                    state = .afterDelimiter
                } else {
                    // All but a possible start of the delimiter is settled.
                    let safe = max(i, n - (delimiter.count - 1))
                    if inBody && safe > i { try emit(.body(UnsafeRawBufferPointer(rebasing: data[i..<safe]))) }
                    carry = Array(data[safe..<n])
                    return
                }
            case .afterDelimiter:
                // "--" ends the body; otherwise optional padding, then CRLF starts a part's headers.
                let b = data[i]
                if b == 0x20 || b == 0x09 {
                    i += 1
                    continue
                }
                guard n - i >= 2 else {
                    carry = Array(data[i..<n])
                    return
                }
                if b == UInt8(ascii: "-") && data[i + 1] == UInt8(ascii: "-") {
                    state = .epilogue
                    try emit(.end)
                    return
                }
                guard b == 0x0D && data[i + 1] == 0x0A else { throw Failure.malformed("a boundary line is not followed by CRLF or --") }
                i += 2
                headers = []
                state = .headers
            case .headers:
                guard let k = Self.find([0x0D, 0x0A], in: data, from: i) else {
                    guard n - i <= Self.maxHeaderLine else { throw Failure.malformed("a part header is longer than \(Self.maxHeaderLine) bytes") }
                    carry = Array(data[i..<n])
                    return
                }
                guard k - i <= Self.maxHeaderLine else { throw Failure.malformed("a part header is longer than \(Self.maxHeaderLine) bytes") }
                if k == i {
                    state = .body
                    try emit(.headers(headers))
                } else {
                    try header(UnsafeRawBufferPointer(rebasing: data[i..<k]))
                }
                i = k + 2
            }
        }
    }

    /// `Name: value`; the name a token (RFC 9110 §5.6.2), no folded continuation lines.
    private mutating func header(_ line: UnsafeRawBufferPointer) throws {
        guard let colon = line.firstIndex(of: UInt8(ascii: ":")), colon > 0 else {
            throw Failure.malformed("a part header has no name (expected 'Name: value')")
        }
        let name = line[0..<colon]
        guard name.allSatisfy(Self.isTokenByte) else { throw Failure.malformed("a part header's name is not a token of ASCII letters, digits and !#$%&'*+-.^_`|~") }
        guard headers.count < Self.maxHeaders else { throw Failure.malformed("a multipart part has more than \(Self.maxHeaders) headers") }
        let value = String(decoding: line[(colon + 1)...], as: UTF8.self).trimmingCharacters(in: CharacterSet(charactersIn: " \t"))
        headers.append((String(decoding: name, as: UTF8.self), value))
    }

    static func isTokenByte(_ b: UInt8) -> Bool {
        switch b {
        case UInt8(ascii: "a")...UInt8(ascii: "z"), UInt8(ascii: "A")...UInt8(ascii: "Z"), UInt8(ascii: "0")...UInt8(ascii: "9"): true
        default: "!#$%&'*+-.^_`|~".utf8.contains(b)
        }
    }

    /// The first index ≥ `from` where `needle` starts in `data` (memchr for its first byte).
    static func find(_ needle: [UInt8], in data: UnsafeRawBufferPointer, from: Int) -> Int? {
        guard let base = data.baseAddress, from < data.count else { return nil }
        var i = from
        while data.count - i >= needle.count {
            guard let hit = memchr(base + i, Int32(needle[0]), data.count - i - needle.count + 1) else { return nil }
            let k = base.distance(to: UnsafeRawPointer(hit))
            if needle.withUnsafeBytes({ memcmp(base + k, $0.baseAddress!, needle.count) }) == 0 { return k }
            i = k + 1
        }
        return nil
    }
}
