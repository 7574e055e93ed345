/// Why a `POST /build` body was refused: always the caller's input, so the HTTP layer answers
/// 400 Bad Request with `message` as the plain-text body. The parsers in this module know nothing of
/// HTTP; the gateway maps this to its own error (`GatewayError(_: SubmissionError)`).
public struct SubmissionError: Error, Sendable, Equatable, CustomStringConvertible {
    /// What is wrong and what to send instead, for the person who sent it.
    public let message: String

    public init(_ message: String) {
        self.message = message
    }

    public var description: String { message }
}
