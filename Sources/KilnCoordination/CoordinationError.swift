/// What the coordination layer refuses, in words for the user who asked. The HTTP layer answers it
/// with the status its kind stands for (`GatewayError.init(_:)`); the coordination layer knows no
/// HTTP.
public struct CoordinationError: Error, Sendable, Equatable, CustomStringConvertible {
    public enum Kind: Sendable, Equatable {
        /// The request itself is wrong.
        case invalid
        /// No such job or file.
        case notFound
        /// The job is not in a state that allows it.
        case conflict
        /// What it needs existed and is gone for good.
        case gone
        /// The gateway cannot do it right now; the same request may work later.
        case unavailable
        /// The gateway's own state is broken.
        case internalError
    }

    public let kind: Kind
    public let message: String

    public init(_ kind: Kind, _ message: String) {
        self.kind = kind
        self.message = message
    }

    public var description: String { message }

    static func noJob(_ id: String) -> CoordinationError { CoordinationError(.notFound, "no job with id '\(id)'") }
}
