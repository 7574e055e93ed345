import Crypto
import Foundation
import KilnCore

/// Dead Simple Signing Envelope (https://github.com/secure-systems-lab/dsse), so standard tools
/// (securesystemslib, cosign, in-toto verifiers) can check Kiln's signatures.
public struct DSSEEnvelope: Codable, Sendable, Equatable {
    public struct Signature: Codable, Sendable, Equatable {
        public var keyid: String
        public var sig: String

        public init(keyid: String, sig: String) {
            self.keyid = keyid
            self.sig = sig
        }
    }

    public static let inTotoPayloadType = "application/vnd.in-toto+json"

    public var payloadType: String
    /// Standard base64 of the payload bytes.
    public var payload: String
    public var signatures: [Signature]

    public init(payloadType: String, payload: String, signatures: [Signature]) {
        self.payloadType = payloadType
        self.payload = payload
        self.signatures = signatures
    }

    /// Pre-authentication encoding: `"DSSEv1" SP len(type) SP type SP len(body) SP body`.
    public static func pae(payloadType: String, payload: [UInt8]) -> [UInt8] {
        let type = Array(payloadType.utf8)
        var out = Array("DSSEv1 \(type.count) ".utf8)
        out += type
        out += Array(" \(payload.count) ".utf8)
        out += payload
        return out
    }

    /// Signs `payload` with `key` (Ed25519 over the PAE).
    public static func sign(payload: [UInt8], payloadType: String = inTotoPayloadType, key: SigningKey) throws -> DSSEEnvelope {
        let signature = try key.sign(pae(payloadType: payloadType, payload: payload))
        return DSSEEnvelope(
            payloadType: payloadType, payload: Data(payload).base64EncodedString(),
            signatures: [Signature(keyid: key.publicKey.keyID, sig: Data(signature).base64EncodedString())])
    }

    /// The payload bytes (standard or URL-safe base64 accepted).
    public func payloadBytes() throws(VerificationError) -> [UInt8] {
        guard let bytes = Base64.decode(payload) else { throw .init(.signature, "DSSE payload is not valid base64") }
        return bytes
    }

    /// Checks the signature over the PAE **before** the payload is parsed; returns the key that
    /// verified and the payload bytes.
    public func verify(trustedKeys: [PublicKey], payloadType expected: String = inTotoPayloadType) throws(VerificationError) -> (key: PublicKey, payload: [UInt8]) {
        guard payloadType == expected else {
            throw .init(.signature, "unknown DSSE payloadType '\(payloadType)' (expected \(expected))")
        }
        guard !signatures.isEmpty else { throw .init(.signature, "DSSE envelope has no signatures") }
        guard !trustedKeys.isEmpty else { throw .init(.signature, "no trusted public key was given") }
        let body = try payloadBytes()
        let message = DSSEEnvelope.pae(payloadType: payloadType, payload: body)
        for signature in signatures {
            guard let sig = Base64.decode(signature.sig) else { continue }
            for key in trustedKeys where key.isValidSignature(sig, for: message) {
                return (key, body)
            }
        }
        let ids = signatures.map(\.keyid).joined(separator: ", ")
        throw .init(.signature, "the \(payloadType) DSSE signature (keyid \(ids)) does not verify with key \(trustedKeys.map(\.keyID).joined(separator: ", "))")
    }
}
