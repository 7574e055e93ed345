import Crypto
import Foundation
import KilnCore

/// A bus credential for one worker, minted by the pool and checked by the broker: who (the worker
/// id), until when, signed with the operator's Ed25519 credential key. A leaked credential is one
/// worker's, for the life of one job; it names no permissions of its own — the broker derives them
/// from the worker id (its own inbox, its own direct subject, the workers' queue group only).
///
/// Text form: `kiln-cred-v1.<base64url(JSON claims)>.<base64url(Ed25519 signature over the first two parts)>`.
public struct WorkerCredential: Sendable, Equatable {
    public static let prefix = "kiln-cred-v1."

    public var workerID: String
    /// Unix seconds.
    public var issuedAt: Int64
    public var expiresAt: Int64

    public init(workerID: String, issuedAt: Int64, expiresAt: Int64) {
        self.workerID = workerID
        self.issuedAt = issuedAt
        self.expiresAt = expiresAt
    }

    /// The identity the broker gives a worker's connection (and stamps as its `kiln-sender`).
    public var identity: String { Self.identity(of: workerID) }

    /// `worker:<id>`: the one spelling of a worker's bus identity — the broker's stamp, the NATS user's
    /// name, and what the gateway binds a job to when the bus does not stamp.
    public static func identity(of workerID: some StringProtocol) -> String { identityPrefix + workerID }

    /// The worker id an identity names, if it is a worker's (nil for the gateway, the pool, …).
    public static func workerID(ofIdentity identity: some StringProtocol) -> Substring? {
        let s = Substring(identity)
        return s.hasPrefix(identityPrefix) ? s.dropFirst(identityPrefix.utf8.count) : nil
    }

    static let identityPrefix = "worker:"

    struct Claims: Codable {
        var wid: String
        var iat: Int64
        var exp: Int64
    }

    public func mint(key: Curve25519.Signing.PrivateKey) throws -> String {
        let claims = try JSONEncoder().encode(Claims(wid: workerID, iat: issuedAt, exp: expiresAt))
        let head = Self.prefix + Base64.encodeURLSafe(Array(claims))
        let signature = try key.signature(for: Array(head.utf8))
        return head + "." + Base64.encodeURLSafe(Array(signature))
    }

    /// Checks the signature first, then the claims; every failure is an `authorizationRequired` error.
    public static func verify(_ text: String, key: Curve25519.Signing.PublicKey, now: Int64) throws(BusError) -> WorkerCredential {
        guard text.utf8.count <= 4096, text.hasPrefix(prefix) else { throw .authorizationRequired("authorization failed: not a worker credential") }
        let parts = text.dropFirst(prefix.count).split(separator: ".", omittingEmptySubsequences: false)
        guard parts.count == 2, let claimsBytes = Base64.decode(parts[0]), let signature = Base64.decode(parts[1]) else {
            throw .authorizationRequired("authorization failed: malformed worker credential")
        }
        let head = text.utf8.prefix(prefix.utf8.count + parts[0].utf8.count)
        guard key.isValidSignature(signature, for: Array(head)) else {
            throw .authorizationRequired("authorization failed: the worker credential is not signed by the operator's credential key")
        }
        guard let claims = try? JSONDecoder().decode(Claims.self, from: Data(claimsBytes)) else {
            throw .authorizationRequired("authorization failed: unreadable worker credential claims")
        }
        guard Subject.isValidWorkerID(claims.wid) else { throw .authorizationRequired("authorization failed: invalid worker id in credential") }
        guard claims.exp > now else { throw .authorizationRequired("authorization failed: the worker credential expired") }
        guard claims.iat <= now + 300 else { throw .authorizationRequired("authorization failed: the worker credential is issued in the future") }
        return WorkerCredential(workerID: claims.wid, issuedAt: claims.iat, expiresAt: claims.exp)
    }
}

extension Subject {
    /// A worker id is one subject token of letters, digits, `-` and `_` (at most 64), so that it can
    /// be spliced into permission patterns without widening them.
    public static func isValidWorkerID(_ id: String) -> Bool {
        !id.isEmpty && id.utf8.count <= 64 && id.utf8.allSatisfy { ($0 >= 48 && $0 <= 57) || ($0 >= 65 && $0 <= 90) || ($0 >= 97 && $0 <= 122) || $0 == 45 || $0 == 95 }
    }
}
