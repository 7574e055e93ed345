import Foundation
import KilnCore

/// The farm key's word that one worker's in-memory key may sign results, for a short time (#19
/// item 3). A VM worker makes its signing key in RAM at boot and never holds the farm key; the pool
/// that launched it (and holds the farm key outside every VM) signs this certificate over the VM's
/// public key, naming the worker id, the VM image the pool booted and an expiry. The evidence carries
/// it, so a verifier that pins only the farm key can follow farm key → VM key → provenance.
///
/// What it does not prove: the expiry bounds when the farm vouched for the key, but the build time it
/// is compared with is stated by the key holder itself. A key stolen from a live VM can sign results
/// dated within the window; the short lifetime (the pool's `--certificate-lifetime`) bounds that, and
/// in a confidential VM the TEE report additionally binds the key to the measured image.
public struct WorkerCertificate: Codable, Sendable, Equatable {
    public static let payloadType = "application/vnd.kiln.worker-certificate+json"
    public static let scheme = "kiln-worker-certificate-v1"
    /// The longest validity a verifier accepts, whatever the issuer wrote: a certificate is meant for
    /// one worker's life (boot, one build, delivery), not as a standing credential.
    public static let maximumLifetime: TimeInterval = 7 * 24 * 3600

    public var scheme: String
    public var workerID: String
    /// Hex of the certified raw Ed25519 public key.
    public var publicKey: String
    /// Hex of the issuing (farm) public key; its signature is over this whole document.
    public var issuer: String
    /// The VM image the worker was booted from (kernel, initramfs, kiln-worker), each with its
    /// sha256; empty for a worker the pool started as a plain process.
    public var image: [ResourceDescriptor]
    /// RFC 3339, whole seconds.
    public var notBefore: String
    public var notAfter: String

    enum CodingKeys: String, CodingKey {
        case scheme, issuer, image
        case workerID = "worker_id"
        case publicKey = "public_key"
        case notBefore = "not_before"
        case notAfter = "not_after"
    }

    public init(workerID: String, publicKey: PublicKey, issuer: PublicKey, image: [ResourceDescriptor], notBefore: Date, notAfter: Date) {
        self.scheme = Self.scheme
        self.workerID = workerID
        self.publicKey = publicKey.hex
        self.issuer = issuer.hex
        self.image = image
        self.notBefore = Timestamp.string(notBefore)
        self.notAfter = Timestamp.string(notAfter)
    }

    /// The DSSE envelope the pool hands the worker.
    public func issue(with farmKey: SigningKey) throws -> DSSEEnvelope {
        guard farmKey.publicKey.hex == issuer else { throw KeyError("a certificate names its issuer; this key is not it") }
        return try DSSEEnvelope.sign(payload: try CanonicalJSON.encode(self), payloadType: Self.payloadType, key: farmKey)
    }

    /// Checks `envelope` is a certificate signed by one of `trustedKeys` (or by an issuer whose
    /// fingerprint is in `trustedFingerprints`), and returns it with the key that signed it.
    ///
    /// The issuer named inside is read before the signature is checked only to find which pinned
    /// fingerprint it claims; nothing else of the payload is used until the signature verifies.
    public static func verify(
        _ envelope: DSSEEnvelope, trustedKeys: [PublicKey], trustedFingerprints: [String]
    ) throws(VerificationError) -> (certificate: WorkerCertificate, issuer: PublicKey) {
        var candidates = trustedKeys
        if !trustedFingerprints.isEmpty, let body = try? envelope.payloadBytes(),
            let claimed = try? CanonicalJSON.decode(WorkerCertificate.self, from: body), let key = try? PublicKey(text: claimed.issuer),
            trustedFingerprints.contains(key.keyID)
        {
            candidates.append(key)
        }
        guard !candidates.isEmpty else {
            throw .init(.trust, "the result carries a worker certificate, but you pinned no farm key (--key, --gateway) to check it with")
        }
        let issuer: PublicKey
        let body: [UInt8]
        do { (issuer, body) = try envelope.verify(trustedKeys: candidates, payloadType: payloadType) } catch {
            throw .init(.trust, "the worker certificate is not signed by a farm key you pinned: \(error.message)")
        }
        let certificate: WorkerCertificate
        do { certificate = try CanonicalJSON.decode(WorkerCertificate.self, from: body) } catch {
            throw .init(.trust, "the worker certificate is signed but unreadable: \(error)")
        }
        guard certificate.scheme == scheme else { throw .init(.trust, "unknown worker certificate scheme '\(certificate.scheme)'") }
        guard certificate.issuer == issuer.hex else {
            throw .init(.trust, "the worker certificate names issuer \(certificate.issuer) but is signed by \(issuer.hex)")
        }
        return (certificate, issuer)
    }

    /// Whether `date` lies within the certificate's validity, which must itself be well-formed and
    /// no longer than `maximumLifetime`.
    public func validity(covers date: Date) throws(VerificationError) {
        guard let from = Timestamp.parse(notBefore), let until = Timestamp.parse(notAfter), from <= until else {
            throw .init(.trust, "the worker certificate's validity (\(notBefore) … \(notAfter)) is malformed")
        }
        guard until.timeIntervalSince(from) <= Self.maximumLifetime else {
            throw .init(.trust, "the worker certificate is valid for more than \(Int(Self.maximumLifetime / 3600)) hours: refused")
        }
        guard date >= from, date <= until else {
            throw .init(.trust, "the build finished at \(Timestamp.string(date)), outside the worker certificate's validity \(notBefore) … \(notAfter)")
        }
    }
}
