import Crypto
import Foundation
import KilnArchive

/// `evidence.json`: the DSSE envelope over provenance.json, the TEE report, and the binding that ties
/// the report to this exact result and the user's nonce (design §6).
public struct Evidence: Codable, Sendable, Equatable {
    public var version: Int
    public var dsse: DSSEEnvelope
    /// "none", "sev-snp" or "tdx".
    public var tee: String
    /// Who produced the report ("none" or the configfs-tsm provider, e.g. "sev_guest").
    public var provider: String
    /// base64 of the TEE report (configfs-tsm `outblob`), or null for `tee: none`.
    public var report: String?
    /// base64 of `auxblob` (certificates), when the provider has one.
    public var aux: String?
    /// Hex of the 64 bytes placed in the report: `Binding.reportData`.
    public var reportData: String
    public var binding: Binding

    enum CodingKeys: String, CodingKey {
        case version, dsse, tee, provider, report, aux, binding
        case reportData = "report_data"
    }

    public init(dsse: DSSEEnvelope, tee: String, provider: String, report: String?, aux: String?, reportData: String, binding: Binding) {
        self.version = 1
        self.dsse = dsse
        self.tee = tee
        self.provider = provider
        self.report = report
        self.aux = aux
        self.reportData = reportData
        self.binding = binding
    }
}

/// What the report commits to.
///
/// `report_data = SHA-512( "kiln-evidence-v1" ‖ 0x00 ‖ u32be(len(nonce)) ‖ nonce ‖ sha256(provenance.json)
/// ‖ sha256(manifest.json) ‖ public key (32 raw bytes) )` — all digests raw (32 bytes), the nonce as
/// the raw bytes the user's hex names. Length-prefixing the nonce means no two (nonce, rest) pairs
/// share an encoding; hashing instead of zero-padding means the whole result is committed to.
public struct Binding: Codable, Sendable, Equatable {
    public static let scheme = "kiln-evidence-v1"

    public var scheme: String
    /// Hex, as the user sent it (lowercased).
    public var nonce: String
    public var provenanceSha256: String
    public var manifestSha256: String
    /// Hex of the raw Ed25519 public key that signed the DSSE envelope.
    public var publicKey: String

    enum CodingKeys: String, CodingKey {
        case scheme, nonce
        case provenanceSha256 = "provenance_sha256"
        case manifestSha256 = "manifest_sha256"
        case publicKey = "public_key"
    }

    public init(nonce: String, provenanceSha256: String, manifestSha256: String, publicKey: String) {
        self.scheme = Binding.scheme
        self.nonce = nonce.lowercased()
        self.provenanceSha256 = provenanceSha256
        self.manifestSha256 = manifestSha256
        self.publicKey = publicKey
    }

    /// The 64 bytes that go into the TEE report.
    public func reportData() throws(VerificationError) -> [UInt8] {
        guard scheme == Binding.scheme else { throw .init(.binding, "unknown binding scheme '\(scheme)'") }
        guard let nonceBytes = Hex.decode(nonce), nonceBytes.count <= Nonce.maxBytes else {
            throw .init(.binding, "binding nonce is not hex of at most \(Nonce.maxBytes) bytes")
        }
        guard let p = Hex.decode(provenanceSha256), p.count == 32, let m = Hex.decode(manifestSha256), m.count == 32,
              let k = Hex.decode(publicKey), k.count == 32 else {
            throw .init(.binding, "binding digests or public key are malformed")
        }
        var h = SHA512()
        h.update(data: Array(Binding.scheme.utf8) + [0])
        var len = UInt32(nonceBytes.count).bigEndian
        withUnsafeBytes(of: &len) { h.update(bufferPointer: $0) }
        h.update(data: nonceBytes)
        h.update(data: p)
        h.update(data: m)
        h.update(data: k)
        return Array(h.finalize())
    }
}

/// The user's nonce: hex, at most 16 bytes, even length.
public enum Nonce {
    public static let maxBytes = 16

    /// Returns the normalised (lowercase) nonce or a message saying what is wrong.
    public static func validate(_ text: String) -> Result<String, NonceError> {
        if text.isEmpty { return .failure(NonceError("nonce is empty; send 2 to 32 hex characters")) }
        guard text.utf8.allSatisfy({ ($0 >= 48 && $0 <= 57) || ($0 >= 97 && $0 <= 102) || ($0 >= 65 && $0 <= 70) }) else {
            return .failure(NonceError("nonce must be hex (0-9, a-f)"))
        }
        guard text.count % 2 == 0 else { return .failure(NonceError("nonce has an odd number of hex characters")) }
        guard text.count <= maxBytes * 2 else {
            return .failure(NonceError("nonce is \(text.count / 2) bytes; at most \(maxBytes) bytes (\(maxBytes * 2) hex characters)"))
        }
        return .success(text.lowercased())
    }

    public struct NonceError: Error, Sendable, CustomStringConvertible {
        public let description: String
        init(_ d: String) { description = d }
    }
}
