import HTTPTypes
import Hummingbird
import NIOConcurrencyHelpers

/// Gives requests no route matches a plain-text answer like every other error of the API (the
/// router's own is an empty 404): 404 naming the path for an unknown one, 405 with `Allow` for a
/// known path asked with another method. Sits in front of the router, so it sees those requests.
struct UnmatchedRouteMiddleware: RouterMiddleware {
    typealias Context = GatewayRequestContext

    /// The routes, filled in once they are registered (the middleware must exist before them).
    final class Table: Sendable {
        private let endpoints = NIOLockedValueBox<[GatewayRoutes.Endpoint]>([])
        func set(_ e: [GatewayRoutes.Endpoint]) { endpoints.withLockedValue { $0 = e } }

        /// The methods served at `path` (`{id}` matches any one segment).
        func methods(at path: String) -> [HTTPRequest.Method] {
            let parts = path.split(separator: "/", omittingEmptySubsequences: false)
            return endpoints.withLockedValue { all in
                all.filter { e in
                    let pattern = e.path.split(separator: "/", omittingEmptySubsequences: false)
                    return pattern.count == parts.count && zip(pattern, parts).allSatisfy { $0 == $1 || ($0.hasPrefix("{") && !$1.isEmpty) }
                }.map(\.method)
            }
        }
    }

    let table: Table

    func handle(_ request: Request, context: Context, next: (Request, Context) async throws -> Response) async throws -> Response {
        do {
            return try await next(request, context)
        } catch let error as HTTPError where error.status == .notFound && error.body == nil {
            let path = request.uri.path
            let allowed = table.methods(at: path)
            if allowed.isEmpty {
                throw GatewayError(.notFound, "no endpoint \(request.method.rawValue) \(path); the API is described at GET /openapi.yaml")
            }
            let list = allowed.map(\.rawValue).joined(separator: ", ")
            throw GatewayError(.methodNotAllowed, "\(path) answers \(list), not \(request.method.rawValue)", headers: [.allow: list])
        }
    }
}
