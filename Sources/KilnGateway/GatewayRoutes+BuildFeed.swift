import Foundation
import HTTPTypes
import Hummingbird
import KilnCoordination
import KilnCore
import KilnJobs
import NIOCore
import ServiceLifecycle
import Synchronization

extension GatewayRoutes {
    /// How many of the newest jobs a feed watches, and how often it looks.
    static let feedWindow = 100
    static let feedInterval: Duration = .seconds(1)

    /// `GET /builds/events`: server-sent events, one `build` event (the job's status document) for each
    /// of the caller's jobs (an admin's: everyone's, or `triggered_by`) that appears or changes status or
    /// phase, oldest change first — what the dashboard's list needs to stay live. It reads the job
    /// store (shared by every gateway, so jobs another gateway runs are seen too) once a second over
    /// the newest `feedWindow` jobs; a quiet feed gets a comment every `--sse-keepalive`. It counts
    /// as an event stream against the per-caller limit. Ids only order the events of one connection:
    /// a client that reconnects gets every watched job once more, then changes.
    func buildFeed(_ request: Request, _ context: GatewayRequestContext) async throws -> Response {
        var filter = JobListFilter()
        filter.limit = Self.feedWindow
        if context.principal.role == .admin {
            filter.triggeredBy = request.uri.queryParameters["triggered_by"].map(String.init)
        } else {
            filter.triggeredBy = context.principal.name
        }
        let watch = filter
        let principal = context.principal.name
        let store = self.store
        let metrics = self.metrics
        let keepalive = max(1, Int(configuration.sseKeepalive.components.seconds))
        try limiter.acquire(.eventStream, for: principal)
        return eventStreamResponse(principal: principal) { writer in
            let stopping = Atomic<Bool>(false)
            try await withGracefulShutdownHandler {
                var seen: [String: String] = [:]
                var id = 0
                var quiet = 0
                var out = ByteBuffer(string: "retry: 2000\n\n")
                while !stopping.load(ordering: .relaxed), !Task.isCancelled {
                    let jobs = try await store.list(watch)
                    var watched: [String: String] = [:]
                    for job in jobs.reversed() {
                        let fingerprint = "\(job.status.rawValue) \(job.phase ?? "") \(job.updatedAt?.timeIntervalSince1970 ?? 0)"
                        watched[job.id] = fingerprint
                        guard seen[job.id] != fingerprint else { continue }
                        id += 1
                        let data = try JSONEncoder.sorted.encode(AnyCodable.object(job.statusDocument))
                        out.writeString("id: \(id)\nevent: build\ndata: ")
                        out.writeBytes(data)
                        out.writeString("\n\n")
                    }
                    seen = watched  // bounded by the window
                    if out.readableBytes == 0 {
                        quiet += 1
                        if quiet >= keepalive {
                            out.writeString(": keepalive\n\n")
                            quiet = 0
                        }
                    } else {
                        quiet = 0
                    }
                    if out.readableBytes > 0 {
                        metrics.bytesRelayed.increment(by: Int64(out.readableBytes))
                        try await writer.write(out)
                        out.clear()
                    }
                    try await Task.sleep(for: Self.feedInterval)
                }
            } onGracefulShutdown: {
                stopping.store(true, ordering: .relaxed)
            }
            try await writer.finish(nil)
        }
    }
}

extension JSONEncoder {
    /// Sorted keys, slashes as they are: the API's JSON.
    static var sorted: JSONEncoder {
        let e = JSONEncoder()
        e.outputFormatting = [.sortedKeys, .withoutEscapingSlashes]
        return e
    }
}
