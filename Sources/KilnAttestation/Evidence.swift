import Crypto
import Foundation
import KilnArchive
import KilnCore

/// `evidence.json`: the DSSE envelope over provenance.json, the TEE report, the binding that ties
/// the report to this exact result and the user's nonce (design §6), and a second DSSE envelope over
/// the evidence claims, so that no field here changes a verdict without a signature.
///
/// What each part proves: `dsse` signs the provenance; `claims` signs the binding (and through the
/// manifest digest every file of the result), the TEE kind, the provider and the digests of the
/// report and its certificates; the report (when there is one) is signed by the hardware and carries
/// `report_data`, which commits to the same binding, the signing key included. The unsigned copies of
/// the claims beside them exist for readers; a verifier requires them to equal the signed ones.
public struct Evidence: Codable, Sendable, Equatable {
    public static let version = 2

    public var version: Int
    public var dsse: DSSEEnvelope
    /// DSSE envelope (payload type `EvidenceClaims.payloadType`) over canonical `EvidenceClaims`.
    public var claims: DSSEEnvelope?
    /// "none", "sev-snp" or "tdx".
    public var tee: String
    /// Who produced the report ("none" or the configfs-tsm provider, e.g. "sev_guest").
    public var provider: String
    /// base64 of the TEE report (configfs-tsm `outblob`), or null for `tee: none`.
    public var report: String?
    /// base64 of `auxblob` (for SEV-SNP: the certificate table with VCEK, ASK, ARK), when the provider has one.
    public var aux: String?
    /// Hex of the 64 bytes placed in the report: `Binding.reportData`.
    public var reportData: String
    public var binding: Binding
    /// The farm's `WorkerCertificate` over the signing key, when the worker's key was made in memory
    /// and certified by its pool (a VM worker); absent when the farm key itself signed.
    public var certificate: DSSEEnvelope?

    enum CodingKeys: String, CodingKey {
        case version, dsse, claims, tee, provider, report, aux, binding, certificate
        case reportData = "report_data"
    }

    public init(
        dsse: DSSEEnvelope, claims: DSSEEnvelope, tee: String, provider: String, report: String?, aux: String?,
        reportData: String, binding: Binding, certificate: DSSEEnvelope? = nil
    ) {
        self.version = Evidence.version
        self.dsse = dsse
        self.claims = claims
        self.tee = tee
        self.provider = provider
        self.report = report
        self.aux = aux
        self.reportData = reportData
        self.binding = binding
        self.certificate = certificate
    }
}

/// The signed statement of everything in `evidence.json` besides the provenance envelope.
public struct EvidenceClaims: Codable, Sendable, Equatable {
    public static let payloadType = "application/vnd.kiln.evidence-claims+json"
    public static let scheme = "kiln-claims-v1"

    public var scheme: String
    public var jobID: String
    public var tee: String
    public var provider: String
    /// sha256 of the report bytes / of the aux bytes, or null when there are none.
    public var reportSha256: String?
    public var auxSha256: String?
    public var reportData: String
    public var binding: Binding
    /// sha256 of the canonical JSON of `Evidence.certificate`, or null when there is none.
    public var certificateSha256: String?

    enum CodingKeys: String, CodingKey {
        case scheme, tee, provider, binding
        case jobID = "job_id"
        case reportSha256 = "report_sha256"
        case auxSha256 = "aux_sha256"
        case reportData = "report_data"
        case certificateSha256 = "certificate_sha256"
    }

    public init(
        jobID: String, tee: String, provider: String, report: [UInt8]?, aux: [UInt8]?, reportData: String, binding: Binding,
        certificate: DSSEEnvelope? = nil
    ) throws {
        self.scheme = EvidenceClaims.scheme
        self.jobID = jobID
        self.tee = tee
        self.provider = provider
        self.reportSha256 = report.map { FileDigest.of(bytes: $0).sha256 }
        self.auxSha256 = aux.map { FileDigest.of(bytes: $0).sha256 }
        self.reportData = reportData
        self.binding = binding
        self.certificateSha256 = try certificate.map(Self.digest(of:))
    }

    /// How the claims name a certificate: the sha256 of its canonical JSON.
    public static func digest(of certificate: DSSEEnvelope) throws -> String {
        FileDigest.of(bytes: try CanonicalJSON.encode(certificate)).sha256
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
            let k = Hex.decode(publicKey), k.count == 32
        else {
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

    /// A fresh nonce of `maxBytes` random bytes (what `kiln submit` and `kiln rebuild` pick when the
    /// user gives none).
    public static func random() -> String {
        var generator = SystemRandomNumberGenerator()
        return (0..<maxBytes).map { _ in String(format: "%02x", UInt8.random(in: 0...255, using: &generator)) }.joined()
    }

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
