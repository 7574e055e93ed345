import Hummingbird
import NIOCore

/// Hummingbird's basic context plus the connection's channel: SSE streams run on its event loop
/// and write through its `SSERelay`.
public struct GatewayRequestContext: RequestContext {
    public var coreContext: CoreRequestContextStorage
    public let channel: any Channel
    /// Who is calling, set by `BearerAuth` for every `/build…` route.
    public var principal: Principal = .local
    public var eventLoop: any EventLoop { channel.eventLoop }

    public init(source: ApplicationRequestContextSource) {
        coreContext = .init(source: source)
        channel = source.channel
    }
}
