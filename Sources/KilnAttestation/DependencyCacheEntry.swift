import Foundation
import KilnCore

/// One entry of the farm's compiled-dependency cache (#31 item 3): the archive of a Cargo target
/// directory holding only registry crates, compiled by a worker in a step that ran no code of the
/// user's own crates, signed by that worker.
///
/// Why signed: the archive is compiled code that a later build links into its artifacts, and it
/// travels through the fetch service, which holds no key and is trusted for availability only. A
/// worker uses an entry only when its signature verifies with a key the farm trusts — the farm key
/// itself (process workers sign with it), or a VM worker's in-memory key carrying the pool's
/// certificate by that key — and when it names exactly the key the using worker computed from its own
/// inputs. The entry's digest is named in the provenance of every build that used it.
public struct DependencyCacheStatement: Codable, Sendable, Equatable {
    public static let payloadType = "application/vnd.kiln.dependency-cache+json"
    public static let scheme = "kiln-dependency-cache-v1"

    public var scheme: String
    /// Hex SHA-256 of the canonical description of the inputs (`DependencyCacheKey`).
    public var key: String
    /// Hex SHA-256 and size of the archive (a tar.gz of the target directory's registry units).
    public var archiveSha256: String
    public var archiveSize: Int64
    /// The worker that compiled it, and how it was isolated (`process`, `vm-kvm`, `vm-tcg`).
    public var workerID: String
    public var isolation: String
    /// When it was signed (RFC 3339); must lie within a certificate's validity.
    public var created: String
    /// How many registry crates it holds (for logs and the dashboard).
    public var crates: Int

    enum CodingKeys: String, CodingKey {
        case scheme, key, crates, isolation, created
        case archiveSha256 = "archive_sha256"
        case archiveSize = "archive_size"
        case workerID = "worker_id"
    }

    public init(key: String, archiveSha256: String, archiveSize: Int64, workerID: String, isolation: String, created: Date, crates: Int) {
        self.scheme = Self.scheme
        self.key = key
        self.archiveSha256 = archiveSha256
        self.archiveSize = archiveSize
        self.workerID = workerID
        self.isolation = isolation
        self.created = Timestamp.string(created)
        self.crates = crates
    }
}

/// What the fetch service stores beside an entry's archive: the signed statement, the signer's public
/// key (hex) and, for a worker whose key was made in memory, the pool's certificate over that key.
public struct DependencyCacheSeal: Codable, Sendable, Equatable {
    public var statement: DSSEEnvelope
    public var signer: String
    public var certificate: DSSEEnvelope?

    public init(statement: DSSEEnvelope, signer: String, certificate: DSSEEnvelope?) {
        self.statement = statement
        self.signer = signer
        self.certificate = certificate
    }

    /// Signs `statement` with `key` (a certified in-memory key passes its certificate).
    public static func seal(_ statement: DependencyCacheStatement, key: SigningKey, certificate: DSSEEnvelope?) throws -> DependencyCacheSeal {
        let envelope = try DSSEEnvelope.sign(payload: try CanonicalJSON.encode(statement), payloadType: DependencyCacheStatement.payloadType, key: key)
        return DependencyCacheSeal(statement: envelope, signer: key.publicKey.hex, certificate: certificate)
    }

    /// Who vouched for the signer, once `open` accepted it.
    public enum Trust: Sendable, Equatable {
        /// The signer is a key the farm trusts directly.
        case trustedKey(keyID: String)
        /// The signer is a worker key certified by a trusted farm key.
        case certified(keyID: String, issuerKeyID: String, workerID: String)

        public var description: String {
            switch self {
            case .trustedKey(let id): "signed by trusted key \(id)"
            case .certified(let id, let issuer, let worker): "signed by worker \(worker)'s key \(id), certified by farm key \(issuer)"
            }
        }
    }

    /// The statement, once its signature verifies with a key `trustedKeys` vouch for — directly, or
    /// through a certificate they signed whose validity covers the statement's `created` — and it
    /// names `expectedKey`. The signature is checked before any of the payload is read.
    public func open(trustedKeys: [PublicKey], expectedKey: String) throws(VerificationError) -> (DependencyCacheStatement, Trust) {
        guard !trustedKeys.isEmpty else { throw .init(.trust, "this worker trusts no key for compiled dependencies") }
        let signerKey: PublicKey
        do { signerKey = try PublicKey(text: signer) } catch { throw .init(.signature, "the entry's signer is not an Ed25519 public key") }
        let body: [UInt8]
        do { (_, body) = try statement.verify(trustedKeys: [signerKey], payloadType: DependencyCacheStatement.payloadType) } catch {
            throw .init(.signature, "the entry's signature does not verify with the key it names: \(error.message)")
        }
        let trust: Trust
        var certificateValidity: WorkerCertificate?
        if trustedKeys.contains(signerKey) {
            trust = .trustedKey(keyID: signerKey.keyID)
        } else if let certificate {
            let (issued, issuer) = try WorkerCertificate.verify(certificate, trustedKeys: trustedKeys, trustedFingerprints: [])
            guard issued.publicKey == signerKey.hex else {
                throw .init(.trust, "the entry's certificate certifies key \(issued.publicKey), not its signer \(signerKey.hex)")
            }
            certificateValidity = issued
            trust = .certified(keyID: signerKey.keyID, issuerKeyID: issuer.keyID, workerID: issued.workerID)
        } else {
            throw .init(.trust, "the entry is signed by key \(signerKey.keyID), which this farm does not trust, and carries no certificate")
        }
        let parsed: DependencyCacheStatement
        do { parsed = try CanonicalJSON.decode(DependencyCacheStatement.self, from: body) } catch {
            throw .init(.payload, "the entry's statement is signed but unreadable: \(error)")
        }
        guard parsed.scheme == DependencyCacheStatement.scheme else { throw .init(.payload, "unknown dependency-cache scheme '\(parsed.scheme)'") }
        guard parsed.key == expectedKey else { throw .init(.payload, "the entry is for inputs \(parsed.key), not \(expectedKey)") }
        guard parsed.archiveSize >= 0, parsed.archiveSha256.utf8.count == 64 else { throw .init(.payload, "the entry names no valid archive digest") }
        if let certificateValidity {
            guard let created = Timestamp.parse(parsed.created) else { throw .init(.payload, "the entry's creation time is not a timestamp") }
            guard certificateValidity.workerID == parsed.workerID else {
                throw .init(.trust, "the certificate is for worker \(certificateValidity.workerID), the entry names \(parsed.workerID)")
            }
            try certificateValidity.validity(covers: created)
        }
        return (parsed, trust)
    }
}
