import KilnMessages
import KilnTEE

/// What `kiln verify` established about a result: the verdict, what the hardware report says, which
/// key signed and why it is trusted, and every check with its outcome (`--json` prints this).
public struct VerificationReport: Sendable, Codable, Equatable {
    /// What a passing result proves.
    public enum Verdict: String, Sendable, Codable {
        /// A SEV-SNP or TDX report, checked up to the vendor's pinned root, binds this result.
        case hardwareVerified = "hardware-verified"
        /// A TEE report is present and binds this result, but its chain could not be checked.
        case teeUnverified = "tee-unverified"
        /// No TEE: only the farm key vouches for the result.
        case noTEE = "no-tee"
    }

    /// Why the signing key is trusted.
    public enum KeyTrust: String, Sendable, Codable {
        /// The user named it (`--key`, `--key-fingerprint`, or `--gateway`'s keys).
        case pinned
        /// A hardware-verified report binds it: no farm key needed.
        case hardwareBound = "hardware-bound"
        /// A worker certificate signed by a key the user pinned vouches for it (a VM worker's key).
        case certified = "farm-certified"
    }

    /// What a worker certificate established (`key_trust: farm-certified`).
    public struct CertifiedWorker: Sendable, Codable, Equatable {
        public var workerID: String
        public var issuerKeyID: String
        public var notBefore: String
        public var notAfter: String
        /// File name → sha256 of the VM image the worker booted (empty for a process worker).
        public var image: [String: String]

        enum CodingKeys: String, CodingKey {
            case image
            case workerID = "worker_id"
            case issuerKeyID = "issuer_key_id"
            case notBefore = "not_before"
            case notAfter = "not_after"
        }

        init(_ certificate: WorkerCertificate, issuer: PublicKey) {
            workerID = certificate.workerID
            issuerKeyID = issuer.keyID
            notBefore = certificate.notBefore
            notAfter = certificate.notAfter
            image = Dictionary(certificate.image.compactMap { d in d.name.flatMap { n in d.digest?["sha256"].map { (n, $0) } } }, uniquingKeysWith: { a, _ in a })
        }
    }

    public typealias Check = VerificationCheck

    public var ok: Bool
    public var verdict: Verdict?
    public var jobID: String?
    public var tee: String?
    public var keyFingerprint: String?
    public var keyTrust: KeyTrust?
    public var workerCertificate: CertifiedWorker?
    public var measurement: String?
    public var registers: [String: String]?
    public var tcb: [String: String]?
    public var attributes: [String: String]?
    public var artifacts: [String: String]
    public var checks: [Check]
    public var failedStep: VerificationError.Step?
    public var error: String?
    /// False when the signed provenance says the build had network (`build_config.internet_access`).
    public var hermetic: Bool?
    public var buildConfig: BuildConfig?
    public var buildOptions: BuildOptions?

    enum CodingKeys: String, CodingKey {
        case ok, verdict, tee, measurement, registers, tcb, attributes, artifacts, checks, error, hermetic
        case buildConfig = "build_config"
        case buildOptions = "build_options"
        case jobID = "job_id"
        case keyFingerprint = "key_fingerprint"
        case keyTrust = "key_trust"
        case workerCertificate = "worker_certificate"
        case failedStep = "failed_step"
    }

    public init() {
        ok = false
        artifacts = [:]
        checks = []
    }

    mutating func record(_ appraisal: TEEAppraisal) {
        measurement = appraisal.measurement
        registers = appraisal.registers
        tcb = appraisal.tcb
        attributes = appraisal.attributes
        for c in appraisal.checks {
            checks.append(.init("tee." + c.name, c.outcome, c.detail))
        }
    }
}
