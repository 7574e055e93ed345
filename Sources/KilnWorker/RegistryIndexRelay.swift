import Foundation
import KilnMessages
import NIOCore
import NIOHTTP1
import NIOPosix
import Synchronization

/// Lets `cargo generate-lockfile`, running in a sandbox with no network, read a sparse registry's
/// index — and nothing else.
///
/// Resolving versions needs the registry's index files; the sandbox must not reach the network (nor
/// the host). So the worker serves HTTP on a Unix socket in a directory bound into the sandbox, and
/// `socat` inside the sandbox's own network namespace forwards a loopback port to it. The relay
/// answers only `GET /config.json` (a stub: downloads never go through it) and `GET` of a crate's
/// index path, which it asks the farm's fetch service for (`FetchClient`; the service reads the
/// registry, redirects refused, bodies bounded). Any other method or path gets 404; requests and bytes per
/// relay are bounded, so a hostile manifest cannot make the worker fetch without end.
final class RegistryIndexRelay: Sendable {
    struct Configuration: Sendable {
        /// Index files one lock generation may ask for (real projects: hundreds).
        var maxRequests = 20_000
        /// Bytes of index one lock generation may pull through the relay.
        var maxBytes = 512 << 20
    }

    struct Statistics: Sendable, Equatable {
        var requests = 0
        var bytes = 0
        var notFound = 0
        var refused = 0
    }

    /// The socket path (inside a directory of its own, so the directory can be bound into a sandbox).
    let socketPath: String
    private let server: NIOAsyncChannel<NIOAsyncChannel<HTTPServerRequestPart, HTTPServerResponsePart>, Never>
    private let fetch: FetchClient
    private let configuration: Configuration
    private let statistics = Mutex(Statistics())
    /// The first upstream failure (a registry that cannot be reached is the farm's problem, not a
    /// dependency the user named wrongly): reported by `generateCargoLock`.
    private let upstreamFailure = Mutex<FetchClient.Failure?>(nil)

    var served: Statistics { statistics.withLock { $0 } }
    var firstUpstreamFailure: FetchClient.Failure? { upstreamFailure.withLock { $0 } }

    private init(
        socketPath: String, server: NIOAsyncChannel<NIOAsyncChannel<HTTPServerRequestPart, HTTPServerResponsePart>, Never>, fetch: FetchClient,
        configuration: Configuration
    ) {
        self.socketPath = socketPath
        self.server = server
        self.fetch = fetch
        self.configuration = configuration
    }

    /// Binds the socket (mode 0666, so the build user can connect; the directory decides who can reach it).
    static func bind(socketPath: String, fetch: FetchClient, configuration: Configuration = .init()) async throws -> RegistryIndexRelay {
        let server = try await ServerBootstrap(group: MultiThreadedEventLoopGroup.singleton)
            .bind(unixDomainSocketPath: socketPath, cleanupExistingSocketFile: true) { channel in
                channel.eventLoop.makeCompletedFuture {
                    try channel.pipeline.syncOperations.configureHTTPServerPipeline()
                    return try NIOAsyncChannel<HTTPServerRequestPart, HTTPServerResponsePart>(wrappingChannelSynchronously: channel)
                }
            }
        chmod(socketPath, 0o666)
        return RegistryIndexRelay(socketPath: socketPath, server: server, fetch: fetch, configuration: configuration)
    }

    /// Serves until `body` returns, then closes the socket and every connection.
    func serve<T: Sendable>(while body: @Sendable () async throws -> T) async throws -> T {
        try await withThrowingTaskGroup(of: T?.self) { group in
            group.addTask {
                try await withThrowingDiscardingTaskGroup { connections in
                    try await self.server.executeThenClose { inbound in
                        for try await connection in inbound {
                            connections.addTask { await self.handle(connection) }
                        }
                    }
                }
                return nil
            }
            let result = try await body()
            group.cancelAll()
            // Already closed is the state wanted.
            try? await server.channel.close()
            return result
        }
    }

    /// One request per connection, then close: cargo asks to upgrade to h2c on every request, and
    /// NIO's decoder stops parsing after a request that asks for an upgrade, so a second request on
    /// the same connection would never be answered. Connections are cheap here (socat forks one each).
    private func handle(_ connection: NIOAsyncChannel<HTTPServerRequestPart, HTTPServerResponsePart>) async {
        // One cargo connection failing (cargo hung up) ends that connection only; cargo reports its own error.
        try? await connection.executeThenClose { inbound, outbound in
            var head: HTTPRequestHead?
            for try await part in inbound {
                switch part {
                case .head(let h): head = h
                case .body: break  // a GET has none; anything sent is ignored
                case .end:
                    guard let request = head else { return }
                    let (status, body) = await answer(request)
                    var headers = HTTPHeaders()
                    headers.add(name: "Content-Length", value: String(body.count))
                    headers.add(name: "Content-Type", value: status == .ok ? "application/json" : "text/plain")
                    headers.add(name: "Connection", value: "close")
                    try await outbound.write(.head(HTTPResponseHead(version: .http1_1, status: status, headers: headers)))
                    try await outbound.write(.body(.byteBuffer(ByteBuffer(bytes: body))))
                    try await outbound.write(.end(nil))
                    return
                }
            }
        }
    }

    /// What one request gets: the stub config, an index file from upstream, or a refusal.
    func answer(_ request: HTTPRequestHead) async -> (HTTPResponseStatus, [UInt8]) {
        let admitted: Bool = statistics.withLock { s in
            guard s.requests < configuration.maxRequests, s.bytes < configuration.maxBytes else {
                s.refused += 1
                return false
            }
            s.requests += 1
            return true
        }
        guard admitted else { return (.tooManyRequests, Array("the worker's index relay limit is reached\n".utf8)) }
        guard request.method == .GET else { return (.methodNotAllowed, Array("only GET\n".utf8)) }
        let path = request.uri.split(separator: "?", maxSplits: 1).first.map(String.init) ?? ""
        if path == "/config.json" {
            // Downloads never go through the relay: the fetch phase downloads what the lock pins.
            return (.ok, Array(#"{"dl":"http://127.0.0.1:9/kiln-relay-serves-no-downloads"}"#.utf8))
        }
        guard let name = Self.crateName(indexPath: path) else {
            statistics.withLock { $0.notFound += 1 }
            return (.notFound, Array("not an index path\n".utf8))
        }
        do {
            guard let bytes = try await fetch.indexFile(name) else {
                statistics.withLock { $0.notFound += 1 }
                return (.notFound, Array("no such crate\n".utf8))
            }
            statistics.withLock { $0.bytes += bytes.count }
            return (.ok, bytes)
        } catch {
            let failure = error as? FetchClient.Failure ?? FetchClient.Failure(status: 0, message: "\(error)")
            upstreamFailure.withLock { if $0 == nil { $0 = failure } }
            return (.badGateway, Array("\(failure.description)\n".utf8))
        }
    }

    /// The crate a sparse-index path names, when it is exactly the path crates.io's layout gives that
    /// name (`/1/a`, `/2/ab`, `/3/a/abc`, `/ab/cd/abcd`): anything else never reaches the registry.
    static func crateName(indexPath path: String) -> String? {
        guard path.hasPrefix("/"), let name = path.split(separator: "/").last.map(String.init),
            FetchNames.isValidCrateName(name), "/" + FetchNames.indexPath(name) == path
        else { return nil }
        return name
    }
}
