/// Why a TEE report was refused: `check` names what failed ("signature", "vcek-chain", "policy", …).
public struct TEEVerificationError: Error, Sendable, Equatable, CustomStringConvertible {
    public var check: String
    public var message: String

    public init(_ check: String, _ message: String) {
        self.check = check
        self.message = message
    }

    public var description: String { "\(check): \(message)" }
}
