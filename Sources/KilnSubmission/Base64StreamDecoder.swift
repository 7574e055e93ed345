/// Decodes base64 as it arrives, in pieces of any size, so a 100 MiB `source_data` never has to sit in
/// memory as text. Accepts what `Base64.decode` accepts for whole strings: the standard and the
/// URL-safe alphabet, with or without padding; nothing may follow padding.
struct Base64StreamDecoder: Sendable {
    private var quad: UInt32 = 0
    private var sextets = 0
    private var padding = 0

    /// 0–63 for alphabet bytes (both alphabets), 0xFF otherwise.
    private static let values: [UInt8] = {
        var table = [UInt8](repeating: 0xFF, count: 256)
        for (i, c) in "ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789".utf8.enumerated() { table[Int(c)] = UInt8(i) }
        table[Int(UInt8(ascii: "+"))] = 62
        table[Int(UInt8(ascii: "-"))] = 62
        table[Int(UInt8(ascii: "/"))] = 63
        table[Int(UInt8(ascii: "_"))] = 63
        return table
    }()

    /// Decodes `bytes`, appending whole bytes to `output`; false at the first byte that cannot be base64 here.
    mutating func decode(_ bytes: UnsafeRawBufferPointer, into output: inout [UInt8]) -> Bool {
        let table = Self.values
        for byte in bytes {
            if byte == UInt8(ascii: "=") {
                guard sextets >= 2, sextets + padding < 4 else { return false }
                padding += 1
                continue
            }
            let value = table[Int(byte)]
            guard value != 0xFF, padding == 0 else { return false }
            quad = quad << 6 | UInt32(value)
            sextets += 1
            if sextets == 4 {
                output.append(UInt8(truncatingIfNeeded: quad >> 16))
                output.append(UInt8(truncatingIfNeeded: quad >> 8))
                output.append(UInt8(truncatingIfNeeded: quad))
                quad = 0
                sextets = 0
            }
        }
        return true
    }

    /// Flushes the last one or two bytes of an unpadded or padded tail; false when the text ended mid-byte.
    mutating func finish(into output: inout [UInt8]) -> Bool {
        defer {
            quad = 0
            sextets = 0
            padding = 0
        }
        switch sextets {
        case 0: return padding == 0
        case 2: output.append(UInt8(truncatingIfNeeded: quad >> 4))
        case 3:
            output.append(UInt8(truncatingIfNeeded: quad >> 10))
            output.append(UInt8(truncatingIfNeeded: quad >> 2))
        default: return false
        }
        return true
    }
}
