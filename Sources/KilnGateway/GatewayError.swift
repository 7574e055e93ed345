import Foundation
import HTTPTypes
import Hummingbird
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
