import Crypto
import CryptoExtras
import Foundation
import KilnArchive
import KilnCore

/// The farm's Ed25519 signing key.
public struct SigningKey: Sendable {
    let key: Curve25519.Signing.PrivateKey

    public init() { key = Curve25519.Signing.PrivateKey() }

    init(key: Curve25519.Signing.PrivateKey) { self.key = key }

    public init(seed: [UInt8]) throws {
        guard seed.count == 32 else { throw KeyError("an Ed25519 seed is 32 bytes, got \(seed.count)") }
        self.init(key: try Curve25519.Signing.PrivateKey(rawRepresentation: seed))
    }

    /// Reads a key file: PKCS#8 PEM ("BEGIN PRIVATE KEY"), 64 hex characters, or the raw 32-byte seed.
    public init(contentsOf path: String) throws {
        guard let data = FileManager.default.contents(atPath: path) else { throw KeyError("cannot read key file \(path)") }
        let text = String(decoding: data, as: UTF8.self).trimmingCharacters(in: .whitespacesAndNewlines)
        if text.hasPrefix("-----BEGIN") {
            let parsed: Curve25519.Signing.PrivateKey
            do { parsed = try Curve25519.Signing.PrivateKey(pemRepresentation: text) } catch {
                throw KeyError("key file \(path) is not an Ed25519 private key PEM: \(error)")
            }
            self.init(key: parsed)
        } else if text.count == 64, let bytes = Hex.decode(text) {
            try self.init(seed: bytes)
        } else if data.count == 32 {
            try self.init(seed: Array(data))
        } else {
            throw KeyError("key file \(path): expected PEM, 64 hex characters or 32 raw bytes")
        }
    }

    public var publicKey: PublicKey { PublicKey(key: key.publicKey) }
    public var seed: [UInt8] { Array(key.rawRepresentation) }
    public var pemRepresentation: String { key.pemRepresentation + "\n" }

    public func sign(_ message: [UInt8]) throws -> [UInt8] { Array(try key.signature(for: message)) }

    /// Writes the key as PEM with mode 0600.
    public func write(to path: String) throws {
        let fd = open(path, O_WRONLY | O_CREAT | O_TRUNC, 0o600)
        guard fd >= 0 else { throw KeyError("cannot write key file \(path)") }
        defer { close(fd) }
        let bytes = Array(pemRepresentation.utf8)
        guard bytes.withUnsafeBytes({ Glibc.write(fd, $0.baseAddress, $0.count) }) == bytes.count else {
            throw KeyError("cannot write key file \(path)")
        }
    }

    /// Loads the key at `path`, creating (and saving) a new one if the file does not exist.
    /// Safe when several workers start at once with the same missing file: the new key is written
    /// whole to a temporary file and linked into place, which fails if another process got there
    /// first; everyone then uses the one key on disk, never a half-written file.
    public static func loadOrCreate(at path: String) throws -> SigningKey {
        if FileManager.default.fileExists(atPath: path) { return try SigningKey(contentsOf: path) }
        let key = SigningKey()
        let temporary = path + ".tmp-\(getpid())-\(UInt32.random(in: 0...UInt32.max))"
        try key.write(to: temporary)
        defer { unlink(temporary) }
        if link(temporary, path) == 0 { return key }
        guard errno == EEXIST else { throw KeyError("cannot create key file \(path): \(String(cString: strerror(errno)))") }
        return try SigningKey(contentsOf: path)
    }
}

/// An Ed25519 public key as verifiers see it.
public struct PublicKey: Sendable, Equatable {
    let key: Curve25519.Signing.PublicKey

    init(key: Curve25519.Signing.PublicKey) { self.key = key }

    public init(raw: [UInt8]) throws {
        guard raw.count == 32 else { throw KeyError("an Ed25519 public key is 32 bytes, got \(raw.count)") }
        self.init(key: try Curve25519.Signing.PublicKey(rawRepresentation: raw))
    }

    /// Parses SPKI PEM ("BEGIN PUBLIC KEY"), 64 hex characters, or base64 of the 32 raw bytes.
    public init(text: String) throws {
        let t = text.trimmingCharacters(in: .whitespacesAndNewlines)
        if t.hasPrefix("-----BEGIN") {
            let parsed: Curve25519.Signing.PublicKey
            do { parsed = try Curve25519.Signing.PublicKey(pemRepresentation: t) } catch {
                throw KeyError("not an Ed25519 public key PEM: \(error)")
            }
            self.init(key: parsed)
        } else if t.count == 64, let raw = Hex.decode(t) {
            try self.init(raw: raw)
        } else if let raw = Base64.decode(t), raw.count == 32 {
            try self.init(raw: raw)
        } else {
            throw KeyError("expected an Ed25519 public key as PEM, hex or base64")
        }
    }

    public init(contentsOf path: String) throws {
        guard let data = FileManager.default.contents(atPath: path) else { throw KeyError("cannot read public key file \(path)") }
        if data.count == 32 {
            try self.init(raw: Array(data))
            return
        }
        let text = String(decoding: data, as: UTF8.self)
        if text.contains("BEGIN PRIVATE KEY") {
            self = try SigningKey(contentsOf: path).publicKey
            return
        }
        try self.init(text: text)
    }

    public var raw: [UInt8] { Array(key.rawRepresentation) }
    public var hex: String { raw.hexString }
    public var pemRepresentation: String { key.pemRepresentation + "\n" }
    /// Lowercase hex SHA-256 of the raw 32-byte key: the DSSE `keyid`.
    public var keyID: String { SHA256.hash(data: raw).hexString }

    public func isValidSignature(_ signature: [UInt8], for message: [UInt8]) -> Bool {
        key.isValidSignature(signature, for: message)
    }

    public static func == (a: PublicKey, b: PublicKey) -> Bool { a.raw == b.raw }
}

public struct KeyError: Error, CustomStringConvertible, Sendable {
    public let description: String
    public init(_ d: String) { description = d }
}
