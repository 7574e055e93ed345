import Crypto
import CryptoExtras
import Foundation
import SwiftASN1

/// The parts of an X.509 certificate a TEE chain check needs, read leniently.
///
/// Why not swift-certificates: AMD signs VCEKs and ASKs with RSA-PSS (SHA-384, salt 48), which it
/// does not support, and VCEK serial numbers are not positive, which strict parsers refuse. This
/// parser keeps the exact `tbsCertificate` bytes, so a signature is always checked over what was
/// signed, and interprets nothing it does not need.
public struct X509Certificate: Sendable, Equatable {
    public enum SignatureAlgorithm: String, Sendable {
        case ecdsaSHA256 = "ecdsa-with-SHA256"
        case ecdsaSHA384 = "ecdsa-with-SHA384"
        /// RSASSA-PSS with SHA-384, MGF1-SHA-384 and a 48-byte salt: AMD's only use of PSS.
        case rsaPSSSHA384 = "rsassa-pss-sha384"
    }

    public enum PublicKey: Sendable {
        case p256(P256.Signing.PublicKey)
        case p384(P384.Signing.PublicKey)
        case rsa(_RSA.Signing.PublicKey)
    }

    /// The whole certificate, DER.
    public let der: [UInt8]
    public let tbsBytes: [UInt8]
    public let signatureAlgorithm: SignatureAlgorithm
    public let signature: [UInt8]
    public let issuer: [UInt8]
    public let subject: [UInt8]
    public let notBefore: Date
    public let notAfter: Date
    public let subjectPublicKeyInfo: [UInt8]
    /// Extension values (the contents of `extnValue`) by dotted OID.
    public let extensions: [String: [UInt8]]

    public static func == (a: X509Certificate, b: X509Certificate) -> Bool { a.der == b.der }

    /// SHA-256 of the DER: how pinned roots are compared.
    public var fingerprint: String { SHA256.hash(data: der).map { String(format: "%02x", $0) }.joined() }

    public var publicKey: PublicKey {
        get throws(TEEVerificationError) {
            if let k = try? P384.Signing.PublicKey(derRepresentation: subjectPublicKeyInfo) { return .p384(k) }
            if let k = try? P256.Signing.PublicKey(derRepresentation: subjectPublicKeyInfo) { return .p256(k) }
            if let k = try? _RSA.Signing.PublicKey(derRepresentation: subjectPublicKeyInfo) { return .rsa(k) }
            throw .init("certificate", "the certificate's public key is not P-256, P-384 or RSA")
        }
    }

    /// The common name of the subject, for messages.
    public var subjectName: String { Self.commonName(subject) ?? "?" }
    public var issuerName: String { Self.commonName(issuer) ?? "?" }

    public init(der: [UInt8]) throws(TEEVerificationError) {
        do {
            let root = try DER.parse(der)
            guard case .constructed(let top) = root.content else { throw TEEVerificationError("certificate", "not a SEQUENCE") }
            var it = top.makeIterator()
            guard let tbs = it.next(), let algorithm = it.next(), let signatureNode = it.next() else {
                throw TEEVerificationError("certificate", "a certificate has three parts")
            }
            self.der = der
            self.tbsBytes = Array(tbs.encodedBytes)
            self.signatureAlgorithm = try Self.signatureAlgorithm(algorithm)
            self.signature = try Self.bitString(signatureNode)

            guard case .constructed(let fields) = tbs.content else { throw TEEVerificationError("certificate", "tbsCertificate is not a SEQUENCE") }
            var f = fields.makeIterator()
            var next = f.next()
            if next?.identifier.tagClass == .contextSpecific, next?.identifier.tagNumber == 0 { next = f.next() }  // version
            // `next` is the serial number: deliberately not interpreted (VCEK serials are not positive).
            guard next?.identifier == .integer, let innerAlgorithm = f.next(), let issuer = f.next(), let validity = f.next(),
                let subject = f.next(), let spki = f.next()
            else {
                throw TEEVerificationError("certificate", "tbsCertificate is missing fields")
            }
            guard try Self.signatureAlgorithm(innerAlgorithm) == signatureAlgorithm else {
                throw TEEVerificationError("certificate", "the inner and outer signature algorithms differ")
            }
            self.issuer = Array(issuer.encodedBytes)
            self.subject = Array(subject.encodedBytes)
            guard case .constructed(let times) = validity.content else { throw TEEVerificationError("certificate", "validity is not a SEQUENCE") }
            var t = times.makeIterator()
            guard let nb = t.next(), let na = t.next() else { throw TEEVerificationError("certificate", "validity needs two times") }
            self.notBefore = try Self.date(nb)
            self.notAfter = try Self.date(na)
            self.subjectPublicKeyInfo = Array(spki.encodedBytes)
            var extensions: [String: [UInt8]] = [:]
            while let node = f.next() {
                guard node.identifier.tagClass == .contextSpecific, node.identifier.tagNumber == 3,
                    case .constructed(let wrapper) = node.content, let list = wrapper.first(where: { _ in true }),
                    case .constructed(let entries) = list.content
                else { continue }
                for entry in entries {
                    guard case .constructed(let parts) = entry.content else { continue }
                    let items = Array(parts)
                    guard items.count >= 2, let last = items.last, case .primitive(let value) = last.content else { continue }
                    let oid = try ASN1ObjectIdentifier(derEncoded: items[0])
                    extensions[oid.dotted] = Array(value)
                }
            }
            self.extensions = extensions
        } catch let e as TEEVerificationError {
            throw e
        } catch {
            throw TEEVerificationError("certificate", "not a DER certificate: \(error)")
        }
    }

    /// Every certificate in a PEM text, in order.
    public static func pemChain(_ text: String) throws(TEEVerificationError) -> [X509Certificate] {
        var out: [X509Certificate] = []
        let begin = "-----BEGIN CERTIFICATE-----"
        let end = "-----END CERTIFICATE-----"
        for block in text.components(separatedBy: begin).dropFirst() {
            guard let body = block.components(separatedBy: end).first, block.contains(end) else {
                throw .init("certificate", "a PEM block has no END line")
            }
            guard let der = Data(base64Encoded: body.filter { !$0.isWhitespace }) else { throw .init("certificate", "a PEM block is not base64") }
            out.append(try X509Certificate(der: Array(der)))
        }
        return out
    }

    /// Whether `issuer` signed this certificate (and names it as issuer).
    public func isSigned(by issuer: X509Certificate) throws(TEEVerificationError) -> Bool {
        guard self.issuer == issuer.subject else { return false }
        return try issuer.publicKey.isValid(signature: signature, algorithm: signatureAlgorithm, over: tbsBytes)
    }

    public func isValid(at date: Date) -> Bool { notBefore <= date && date <= notAfter }

    // MARK: - DER helpers

    static let ecdsaSHA256OID = "1.2.840.10045.4.3.2"
    static let ecdsaSHA384OID = "1.2.840.10045.4.3.3"
    static let rsaPSSOID = "1.2.840.113549.1.1.10"
    static let sha384OID = "2.16.840.1.101.3.4.2.2"

    private static func signatureAlgorithm(_ node: ASN1Node) throws -> SignatureAlgorithm {
        guard case .constructed(let parts) = node.content else { throw TEEVerificationError("certificate", "AlgorithmIdentifier is not a SEQUENCE") }
        var it = parts.makeIterator()
        guard let oidNode = it.next() else { throw TEEVerificationError("certificate", "empty AlgorithmIdentifier") }
        let oid = try ASN1ObjectIdentifier(derEncoded: oidNode).dotted
        switch oid {
        case ecdsaSHA256OID: return .ecdsaSHA256
        case ecdsaSHA384OID: return .ecdsaSHA384
        case rsaPSSOID:
            // RSASSA-PSS-params: [0] hash, [1] mask generation, [2] salt length, [3] trailer.
            guard let params = it.next(), case .constructed(let fields) = params.content else {
                throw TEEVerificationError("certificate", "RSA-PSS without parameters")
            }
            var hashOK = false
            var mgfOK = false
            var salt = 20
            for field in fields where field.identifier.tagClass == .contextSpecific {
                switch field.identifier.tagNumber {
                case 0: hashOK = oids(in: field).first == sha384OID
                case 1: mgfOK = oids(in: field).contains(sha384OID)
                case 2:
                    if case .constructed(let inner) = field.content, let n = inner.first(where: { _ in true }) { salt = try Int(derEncoded: n) }
                default: break
                }
            }
            guard hashOK, mgfOK, salt == 48 else {
                throw TEEVerificationError("certificate", "RSA-PSS parameters other than SHA-384 / MGF1-SHA-384 / salt 48")
            }
            return .rsaPSSSHA384
        default:
            throw TEEVerificationError("certificate", "unsupported signature algorithm \(oid)")
        }
    }

    private static func oids(in node: ASN1Node) -> [String] {
        switch node.content {
        case .primitive:
            // A malformed OID names nothing.
            return node.identifier == .objectIdentifier ? [(try? ASN1ObjectIdentifier(derEncoded: node))?.dotted].compactMap { $0 } : []
        case .constructed(let children):
            return children.flatMap { oids(in: $0) }
        }
    }

    private static func bitString(_ node: ASN1Node) throws -> [UInt8] {
        Array(try ASN1BitString(derEncoded: node).bytes)
    }

    private static func date(_ node: ASN1Node) throws -> Date {
        var c = DateComponents()
        c.timeZone = TimeZone(identifier: "UTC")
        if node.identifier == .utcTime {
            let t = try UTCTime(derEncoded: node)
            (c.year, c.month, c.day, c.hour, c.minute, c.second) = (t.year, t.month, t.day, t.hours, t.minutes, t.seconds)
        } else {
            let t = try GeneralizedTime(derEncoded: node)
            (c.year, c.month, c.day, c.hour, c.minute, c.second) = (t.year, t.month, t.day, t.hours, t.minutes, t.seconds)
        }
        var calendar = Calendar(identifier: .gregorian)
        calendar.timeZone = TimeZone(identifier: "UTC")!
        guard let d = calendar.date(from: c) else { throw TEEVerificationError("certificate", "invalid validity time") }
        return d
    }

    private static func commonName(_ name: [UInt8]) -> String? {
        guard let node = try? DER.parse(name) else { return nil }
        var found: String?
        func visit(_ n: ASN1Node) {
            guard case .constructed(let children) = n.content else { return }
            let items = Array(children)
            if items.count == 2, items[0].identifier == .objectIdentifier,
                (try? ASN1ObjectIdentifier(derEncoded: items[0]))?.dotted == "2.5.4.3", case .primitive(let v) = items[1].content
            {
                found = String(decoding: v, as: UTF8.self)
            }
            items.forEach(visit)
        }
        visit(node)
        return found
    }
}

extension X509Certificate.PublicKey {
    /// Checks `signature` (DER ECDSA, or raw RSA) over `message` with the hash the algorithm names.
    func isValid(signature: [UInt8], algorithm: X509Certificate.SignatureAlgorithm, over message: [UInt8]) throws(TEEVerificationError) -> Bool {
        switch (self, algorithm) {
        case (.p256(let k), .ecdsaSHA256):
            guard let s = try? P256.Signing.ECDSASignature(derRepresentation: signature) else { return false }
            return k.isValidSignature(s, for: SHA256.hash(data: message))
        case (.p256(let k), .ecdsaSHA384):
            guard let s = try? P256.Signing.ECDSASignature(derRepresentation: signature) else { return false }
            return k.isValidSignature(s, for: SHA384.hash(data: message))
        case (.p384(let k), .ecdsaSHA384):
            guard let s = try? P384.Signing.ECDSASignature(derRepresentation: signature) else { return false }
            return k.isValidSignature(s, for: SHA384.hash(data: message))
        case (.p384(let k), .ecdsaSHA256):
            guard let s = try? P384.Signing.ECDSASignature(derRepresentation: signature) else { return false }
            return k.isValidSignature(s, for: SHA256.hash(data: message))
        case (.rsa(let k), .rsaPSSSHA384):
            return k.isValidSignature(_RSA.Signing.RSASignature(rawRepresentation: signature), for: SHA384.hash(data: message), padding: .PSS)
        default:
            throw .init("certificate", "a \(algorithm.rawValue) signature cannot come from this kind of key")
        }
    }
}

extension ASN1ObjectIdentifier {
    var dotted: String { oidComponents.map(String.init).joined(separator: ".") }
}
