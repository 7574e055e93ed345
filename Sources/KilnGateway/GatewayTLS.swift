import NIOSSL

/// HTTPS for the gateway itself, for farms that do not sit behind a TLS-terminating proxy: a
/// certificate chain and its key, loaded once at start-up so a bad file stops the gateway with a
/// clear error instead of failing every handshake. TLS 1.2 at least.
public struct GatewayTLS: Sendable {
    public var certificateFile: String
    public var keyFile: String

    public init(certificateFile: String, keyFile: String) {
        self.certificateFile = certificateFile
        self.keyFile = keyFile
    }

    public func makeConfiguration() throws -> TLSConfiguration {
        let chain: [NIOSSLCertificateSource]
        let key: NIOSSLPrivateKey
        do { chain = try NIOSSLCertificate.fromPEMFile(certificateFile).map { .certificate($0) } } catch {
            throw GatewayError(.internalServerError, "cannot load the TLS certificate chain \(certificateFile): \(error)")
        }
        do { key = try NIOSSLPrivateKey(file: keyFile, format: .pem) } catch {
            throw GatewayError(.internalServerError, "cannot load the TLS private key \(keyFile): \(error)")
        }
        guard !chain.isEmpty else { throw GatewayError(.internalServerError, "\(certificateFile) holds no PEM certificate") }
        var config = TLSConfiguration.makeServerConfiguration(certificateChain: chain, privateKey: .privateKey(key))
        config.minimumTLSVersion = .tlsv12
        return config
    }
}
