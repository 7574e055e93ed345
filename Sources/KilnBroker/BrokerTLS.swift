import Foundation
import NIOSSL
import SwiftASN1

/// The broker's TLS settings: its certificate chain and key, and optionally the CA that client
/// certificates must chain to (mTLS: a verified certificate's common name is the user it logs in as).
public struct BrokerTLS: Sendable {
    public var certificateFile: String
    public var keyFile: String
    public var clientCAFile: String?

    public init(certificateFile: String, keyFile: String, clientCAFile: String? = nil) {
        self.certificateFile = certificateFile
        self.keyFile = keyFile
        self.clientCAFile = clientCAFile
    }

    /// Built once at start-up, so a bad file stops the broker with a clear error instead of failing every handshake.
    public func makeContext() throws -> NIOSSLContext {
        let chain = try NIOSSLCertificate.fromPEMFile(certificateFile).map { NIOSSLCertificateSource.certificate($0) }
        let key = NIOSSLPrivateKeySource.privateKey(try NIOSSLPrivateKey(file: keyFile, format: .pem))
        var config: TLSConfiguration
        if let clientCAFile {
            config = .makeServerConfigurationWithMTLS(certificateChain: chain, privateKey: key, trustRoots: .file(clientCAFile))
        } else {
            config = .makeServerConfiguration(certificateChain: chain, privateKey: key)
        }
        config.minimumTLSVersion = .tlsv12
        return try NIOSSLContext(configuration: config)
    }

    /// The last common name (2.5.4.3) in a DER certificate's subject.
    static func commonName(certificateDER der: [UInt8]) -> String? {
        guard let root = try? DER.parse(der), case .constructed(let top) = root.content,
            let tbs = top.first(where: { _ in true }), case .constructed(let fields) = tbs.content
        else { return nil }
        // tbsCertificate: [0] version, serial, signature, issuer, validity, subject, …
        var items = Array(fields)
        if let first = items.first, first.identifier.tagClass == .contextSpecific { items.removeFirst() }
        guard items.count > 4 else { return nil }
        var name: String?
        func visit(_ node: ASN1Node) {
            guard case .constructed(let children) = node.content else { return }
            let parts = Array(children)
            if parts.count == 2, parts[0].identifier == .objectIdentifier,
                (try? ASN1ObjectIdentifier(derEncoded: parts[0]))?.oidComponents == [2, 5, 4, 3], case .primitive(let v) = parts[1].content
            {
                name = String(decoding: v, as: UTF8.self)
            }
            parts.forEach(visit)
        }
        visit(items[4])
        return name
    }
}
