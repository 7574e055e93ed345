import Crypto
import Foundation
import KilnCore

/// NATS "nkeys": Ed25519 keys as nats-server names them (https://docs.nats.io/running-a-nats-service/configuration/securing_nats/auth_intro/nkey_auth).
/// A public key is base32(role byte + 32 key bytes + CRC-16 little-endian) — `O…` an operator, `A…` an
/// account, `U…` a user; a seed is base32(seed role bits + role + 32 seed bytes + CRC) — `SO…`, `SA…`,
/// `SU…`. Kiln's operator credential key (the Ed25519 key kiln-pool signs kiln-broker credentials with)
/// is, unchanged, the NATS account key its workers' user JWTs are issued under.
public struct NATSKey: Sendable {
    public enum Role: UInt8, Sendable {
        case `operator` = 112  // 14 << 3
        case account = 0
        case user = 160  // 20 << 3
    }

    static let seedPrefix: UInt8 = 144  // 18 << 3

    public let role: Role
    public let privateKey: Curve25519.Signing.PrivateKey

    public init(role: Role, privateKey: Curve25519.Signing.PrivateKey = .init()) {
        self.role = role
        self.privateKey = privateKey
    }

    /// Reads an encoded seed (`SU…`, `SA…`, `SO…`), checking its checksum and role.
    public init(seed text: some StringProtocol) throws(BusError) {
        guard let raw = Base32.decode(text.trimmingCharacters(in: .whitespacesAndNewlines)), raw.count == 36,
            CRC16.xmodem(raw[0..<34]) == UInt16(raw[34]) | UInt16(raw[35]) << 8, raw[0] & 0xF8 == Self.seedPrefix
        else { throw .authorizationRequired("not a NATS nkey seed") }
        guard let role = Role(rawValue: (raw[0] & 0x07) << 5 | raw[1] >> 3),
            let key = try? Curve25519.Signing.PrivateKey(rawRepresentation: raw[2..<34])
        else { throw .authorizationRequired("a NATS nkey seed of an unknown role") }
        self.init(role: role, privateKey: key)
    }

    /// `O…`, `A…` or `U…`: what JWTs name as issuer and subject.
    public var publicKey: String { Self.encode(role: role, key: privateKey.publicKey.rawRepresentation) }

    public var seed: String {
        var raw = [Self.seedPrefix | role.rawValue >> 5, (role.rawValue & 31) << 3]
        raw += privateKey.rawRepresentation
        return Self.withChecksum(raw)
    }

    public func sign(_ bytes: some DataProtocol) throws -> [UInt8] { Array(try privateKey.signature(for: Array(bytes))) }

    public static func encode(role: Role, key: some DataProtocol) -> String { withChecksum([role.rawValue] + Array(key)) }

    static func withChecksum(_ raw: [UInt8]) -> String {
        let crc = CRC16.xmodem(raw[...])
        return Base32.encode(raw + [UInt8(crc & 0xFF), UInt8(crc >> 8)])
    }
}

/// RFC 4648 base32, upper case, unpadded: the alphabet nkeys and JWT ids are written in.
public enum Base32 {
    static let alphabet = Array("ABCDEFGHIJKLMNOPQRSTUVWXYZ234567".utf8)

    public static func encode(_ bytes: [UInt8]) -> String {
        var out = [UInt8]()
        out.reserveCapacity((bytes.count * 8 + 4) / 5)
        var buffer: UInt32 = 0
        var bits = 0
        for byte in bytes {
            buffer = buffer << 8 | UInt32(byte)
            bits += 8
            while bits >= 5 {
                out.append(alphabet[Int(buffer >> UInt32(bits - 5) & 31)])
                bits -= 5
            }
        }
        if bits > 0 { out.append(alphabet[Int(buffer << UInt32(5 - bits) & 31)]) }
        return String(decoding: out, as: UTF8.self)
    }

    /// Nil for anything but the alphabet (at most 1 KiB of text: keys are 56–58 characters).
    public static func decode(_ text: some StringProtocol) -> [UInt8]? {
        guard text.utf8.count <= 1024 else { return nil }
        var out = [UInt8]()
        var buffer: UInt32 = 0
        var bits = 0
        for c in text.utf8 {
            let value: UInt8
            switch c {
            case 65...90: value = c - 65
            case 50...55: value = c - 50 + 26
            default: return nil
            }
            buffer = buffer << 5 | UInt32(value)
            bits += 5
            if bits >= 8 {
                out.append(UInt8(buffer >> UInt32(bits - 8) & 0xFF))
                bits -= 8
            }
        }
        return out
    }
}

/// CRC-16/XMODEM (polynomial 0x1021, initial 0), the checksum nkeys carry.
enum CRC16 {
    static func xmodem(_ bytes: ArraySlice<UInt8>) -> UInt16 {
        var crc: UInt16 = 0
        for byte in bytes {
            crc ^= UInt16(byte) << 8
            for _ in 0..<8 { crc = crc & 0x8000 != 0 ? crc << 1 ^ 0x1021 : crc << 1 }
        }
        return crc
    }
}
