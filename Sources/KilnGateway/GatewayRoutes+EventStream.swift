import HTTPTypes
import Hummingbird

extension GatewayRoutes {
    /// The response of an event stream whose slot the caller already holds
    /// (`limiter.acquire(.eventStream, for:)`): SSE headers, the connected-clients gauge, and the slot
    /// given back however the stream ends.
    func eventStreamResponse(principal: String, _ stream: @escaping @Sendable (inout any ResponseBodyWriter) async throws -> Void) -> Response {
        let metrics = self.metrics
        let limiter = self.limiter
        let headers: HTTPFields = [.contentType: "text/event-stream", .cacheControl: "no-cache", .accelBuffering: "no"]
        return Response(
            status: .ok, headers: headers,
            body: ResponseBody { writer in
                metrics.sseClients.increment()
                defer {
                    metrics.sseClients.decrement()
                    limiter.release(.eventStream, for: principal)
                }
                try await stream(&writer)
            })
    }
}
