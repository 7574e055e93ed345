/// A worker whose signing key lives only in its memory (a VM worker) asks the pool that launched it
/// to certify that key, on `Subjects.workerCertify(id)`.
public struct WorkerCertificateRequest: Codable, Sendable, Equatable {
    public var workerID: String
    /// Hex of the raw Ed25519 public key.
    public var publicKey: String

    enum CodingKeys: String, CodingKey {
        case workerID = "worker_id"
        case publicKey = "public_key"
    }

    public init(workerID: String, publicKey: String) {
        self.workerID = workerID
        self.publicKey = publicKey
    }
}

/// The pool's answer: the certificate (base64 of the DSSE envelope's JSON), or why it refused.
public struct WorkerCertificateReply: Codable, Sendable, Equatable {
    public var certificate: String?
    public var error: String?

    public init(certificate: String? = nil, error: String? = nil) {
        self.certificate = certificate
        self.error = error
    }
}
