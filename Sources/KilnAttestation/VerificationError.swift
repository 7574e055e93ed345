/// Why `kiln verify` rejected a result; `step` says which check failed.
public struct VerificationError: Error, Sendable, Equatable, CustomStringConvertible {
    public enum Step: String, Sendable, Codable {
        case files, signature, claims, payload, binding, tee, trust, measurement, nonce, manifest, subjects
        /// A rebuild's signed comparison (`kiln verify --rebuilt`).
        case comparison
    }

    public var step: Step
    public var message: String

    public init(_ step: Step, _ message: String) {
        self.step = step
        self.message = message
    }

    public var description: String { "\(step.rawValue): \(message)" }
}
