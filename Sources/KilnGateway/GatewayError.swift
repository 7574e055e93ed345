import Foundation
import HTTPTypes
import Hummingbird
import KilnCoordination
import KilnSubmission

/// Every HTTP error the gateway returns: a status and a plain-text message telling the user what to fix.
public struct GatewayError: HTTPResponseError, Sendable, CustomStringConvertible {
    public let status: HTTPResponse.Status
    public let message: String
    public var headers: HTTPFields

    public init(_ status: HTTPResponse.Status, _ message: String, headers: HTTPFields = [:]) {
        self.status = status
        self.message = message
        self.headers = headers
    }

    public var description: String { "\(status.code) \(message)" }

    public func response(from request: Request, context: some RequestContext) throws -> Response {
        var h = headers
        h[.contentType] = "text/plain; charset=utf-8"
        return Response(status: status, headers: h, body: .init(byteBuffer: ByteBuffer(string: message + "\n")))
    }

    /// What the coordination layer refused, with the status its kind stands for.
    public init(_ refused: CoordinationError) {
        let status: HTTPResponse.Status =
            switch refused.kind {
            case .invalid: .badRequest
            case .notFound: .notFound
            case .conflict: .conflict
            case .gone: .gone
            case .unavailable: .serviceUnavailable
            case .internalError: .internalServerError
            }
        self.init(status, refused.message)
    }

    /// A body the submission parsers refused: the caller's input, so 400 with the parser's words.
    init(_ refused: SubmissionError) {
        self.init(.badRequest, refused.message)
    }

    static func badRequest(_ m: String) -> GatewayError { GatewayError(.badRequest, m) }
    static func notFound(_ id: String) -> GatewayError { GatewayError(.notFound, "no job with id '\(id)'") }
    static let unauthorized = GatewayError(
        .unauthorized, "a valid bearer token is required (Authorization: Bearer <token>)",
        headers: [.wwwAuthenticate: "Bearer realm=\"kiln\""])
}

/// Routes call the coordinator and let its refusals propagate: Hummingbird answers them as the
/// status their kind stands for, with the coordinator's words.
extension CoordinationError: HTTPResponseError {
    public var status: HTTPResponse.Status { GatewayError(self).status }

    public func response(from request: Request, context: some RequestContext) throws -> Response {
        try GatewayError(self).response(from: request, context: context)
    }
}
