import Foundation
import HTTPTypes
import Hummingbird
import KilnAttestation
import KilnBus
import KilnCoordination
import KilnCore
import KilnJobs
import KilnMessages
import Logging
import NIOCore

extension HTTPField.Name {
    static let lastEventID = HTTPField.Name("Last-Event-ID")!
    static let accelBuffering = HTTPField.Name("X-Accel-Buffering")!
}

/// The HTTP API of design §4.
struct GatewayRoutes: Sendable {
    let coordinator: BuildCoordinator
    /// The live event streams (the coordinator publishes into it as `LiveEventFanOut`).
    let hub: EventHub
    let store: any JobStore
    let files: ResultFiles
    let configuration: GatewayConfiguration
    let metrics: GatewayMetrics
    /// Renders `/metrics` (the backend is the executable's choice).
    let metricsExposition: @Sendable () -> String
    let keys: KeySet
    let limiter: RequestLimiter
    static let dashboard = DashboardAssets()

    /// A route the gateway serves, as written in `docs/openapi.yaml` (`{id}` for a path parameter).
    struct Endpoint: Hashable, Sendable, CustomStringConvertible {
        var method: HTTPRequest.Method
        var path: String
        var description: String { "\(method.rawValue) \(path)" }
    }

    /// Registers every route and returns them, so a test can hold them against the OpenAPI document.
    @discardableResult
    func register(on router: Router<GatewayRequestContext>) -> [Endpoint] {
        var endpoints: [Endpoint] = []
        let auth = BearerAuth(principals: configuration.principals)
        func route(
            _ method: HTTPRequest.Method, _ path: String, authenticated: Bool = true,
            _ handler: @escaping @Sendable (Request, GatewayRequestContext) async throws -> Response
        ) {
            endpoints.append(
                Endpoint(method: method, path: path.replacingOccurrences(of: ":id", with: "{id}").replacingOccurrences(of: ":file", with: "{file}")))
            let group = authenticated ? router.group().add(middleware: auth) : router.group()
            group.on(RouterPath(path), method: method, use: handler)
        }
        route(.get, "/healthz", authenticated: false) { _, _ in
            Response(status: .ok, headers: [.contentType: "text/plain; charset=utf-8"], body: .init(byteBuffer: ByteBuffer(string: "ok\n")))
        }
        route(.get, "/metrics", authenticated: false) { _, _ in try await self.metricsText() }
        route(.get, "/keys", authenticated: false) { _, _ in
            Response(
                status: .ok, headers: [.contentType: "application/json"],
                body: .init(byteBuffer: ByteBuffer(bytes: try CanonicalJSON.encode(self.keys))))
        }
        // The dashboard (#17): static files, public; everything it shows comes from the API below.
        route(.get, "/", authenticated: false) { _, _ in Response(status: .found, headers: [.location: "/ui/"]) }
        route(.get, "/ui/", authenticated: false) { request, _ in
            Self.dashboard.response("index.html", ifNoneMatch: request.headers[.ifNoneMatch])!
        }
        route(.get, "/ui/:file", authenticated: false) { request, context in
            let name = try context.parameters.require("file")
            guard let response = Self.dashboard.response(name, ifNoneMatch: request.headers[.ifNoneMatch]) else {
                throw GatewayError(.notFound, "the dashboard has no file '\(name)'")
            }
            return response
        }
        route(.get, "/farm") { _, _ in try json(try await self.coordinator.farmSummary()) }
        route(.get, "/openapi.yaml", authenticated: false) { _, _ in
            Response(status: .ok, headers: [.contentType: "application/yaml"], body: .init(byteBuffer: ByteBuffer(bytes: PackageResources.openapi_yaml)))
        }
        route(.post, "/build") { request, context in try await self.submit(request, context) }
        route(.get, "/build/:id") { _, context in try await self.status(context) }
        route(.get, "/build/:id/events") { request, context in try await self.events(request, context) }
        route(.get, "/build/:id/result") { request, context in try await self.result(request, context) }
        route(.post, "/build/:id/cancel") { request, context in
            let id = try await self.accessibleJob(context).id
            let reason = try await Self.cancellationReason(request)
            let job = try await self.coordinator.cancel(id, by: context.principal.name, reason: reason)
            return try json(job.statusDocument, status: .accepted)
        }
        route(.post, "/build/:id/retry") { request, context in
            let original = try await self.accessibleJob(context)
            let nonce = try await Self.retryNonce(request)
            let job = try await self.coordinator.retryJob(original, nonce: nonce, triggeredBy: context.principal.name)
            return try json(["job_id": job.id, "status": job.status.rawValue, "nonce": nonce])
        }
        route(.post, "/build/:id/rebuild") { request, context in
            let original = try await self.accessibleJob(context)
            let nonce = try await Self.retryNonce(request)
            let job = try await self.coordinator.rebuildJob(original, nonce: nonce, triggeredBy: context.principal.name)
            return try json(["job_id": job.id, "status": job.status.rawValue, "nonce": nonce, "rebuild_of_build_id": original.id])
        }
        route(.get, "/builds") { request, context in try await self.list(request, context) }
        route(.get, "/builds/events") { request, context in try await self.buildFeed(request, context) }
        return endpoints
    }

    /// The job named in the path, if the caller may see it; someone else's job is a 404, exactly
    /// like a job that does not exist (its existence is not revealed).
    func accessibleJob(_ context: GatewayRequestContext) async throws -> Job {
        let id = try context.parameters.require("id")
        guard let job = try await store.job(id), context.principal.mayAccess(job) else { throw GatewayError.notFound(id) }
        return job
    }

    /// `GET /builds?status=&since=&cursor=&limit=`: the caller's jobs (an admin's: everyone's, or
    /// `triggered_by=NAME`), newest first, `limit` (1–200, default 50) per page; `next_cursor` continues.
    func list(_ request: Request, _ context: GatewayRequestContext) async throws -> Response {
        let q = request.uri.queryParameters
        var filter = JobListFilter()
        if context.principal.role == .admin {
            filter.triggeredBy = q["triggered_by"].map(String.init)
        } else {
            filter.triggeredBy = context.principal.name
        }
        if let s = q["status"] {
            guard let status = Job.Status(rawValue: String(s)) else { throw GatewayError.badRequest("status must be waiting, building, ready, error or cancelled") }
            filter.status = status
        }
        if let s = q["since"] {
            guard let date = Timestamp.parse(s) else {
                throw GatewayError.badRequest("since must be an RFC 3339 time, e.g. 2026-01-01T00:00:00Z")
            }
            filter.since = date
        }
        if let c = q["cursor"] {
            guard let position = Int64(c), position > 0 else { throw GatewayError.badRequest("cursor must be a next_cursor from a previous page") }
            filter.beforePosition = position
        }
        if let l = q["limit"] {
            guard let limit = Int(l), (1...200).contains(limit) else { throw GatewayError.badRequest("limit must be between 1 and 200") }
            filter.limit = limit
        }
        let jobs = try await store.list(filter)
        let next: AnyCodable = jobs.count == filter.limit ? .string(String(jobs.last!.position)) : .null
        return try json(["builds": AnyCodable.array(jobs.map { .object($0.statusDocument) }), "next_cursor": next])
    }

    func submit(_ request: Request, _ context: GatewayRequestContext) async throws -> Response {
        try limiter.admitSubmission(context.principal.name)
        try limiter.acquire(.upload, for: context.principal.name)
        defer { limiter.release(.upload, for: context.principal.name) }
        var reader = SubmissionReader(spoolDirectory: files.incomingDirectory, maxBodyBytes: configuration.maxBodyBytes, metrics: metrics)
        reader.buildMaxima = configuration.buildMaxima
        reader.memoryLimit = min(reader.memoryLimit, configuration.inlineSourceLimit)
        let submission = try await reader.read(contentType: request.headers[.contentType], body: request.body)
        let job: Job
        // The caller's request id if it sent one we can quote safely, else our own.
        let given = request.headers[HTTPField.Name("X-Request-Id")!].flatMap { Subjects.isValidToken($0) ? $0 : nil }
        let requestID = given ?? "r" + UUID().uuidString.replacingOccurrences(of: "-", with: "").prefix(20).lowercased()
        do { job = try await coordinator.submit(submission, triggeredBy: context.principal.name, requestID: requestID) } catch {
            if let spooled = submission.archive?.path { unlink(spooled) }
            throw error
        }
        return try json(["job_id": job.id, "status": job.status.rawValue, "request_id": requestID])
    }

    func status(_ context: GatewayRequestContext) async throws -> Response {
        try json(try await accessibleJob(context).statusDocument)
    }

    func result(_ request: Request, _ context: GatewayRequestContext) async throws -> Response {
        let job = try await accessibleJob(context)
        let id = job.id
        guard job.status == .ready else {
            throw GatewayError(.conflict, "the result is not ready: job \(id) is \(job.status.rawValue)\(job.error.map { " (\($0))" } ?? "")")
        }
        guard let sha = job.resultSha256 else { throw GatewayError(.gone, "job \(id): " + (job.resultAvailability ?? "the result was deleted")) }
        let etag = "\"\(sha)\""
        var headers: HTTPFields = [
            .eTag: etag, .contentType: "application/gzip",
            .contentDisposition: "attachment; filename=\"kiln-\(id).tar.gz\"",
        ]
        if let match = request.headers[.ifNoneMatch], match.split(separator: ",").contains(where: { $0.trimmingCharacters(in: .whitespaces) == etag || $0 == "*" }) {
            return Response(status: .notModified, headers: headers)
        }
        let path = files.resultPath(sha256: sha)
        var info = stat()
        guard stat(path, &info) == 0 else { throw GatewayError(.gone, "the result of job \(id) is no longer on disk") }
        let size = Int(info.st_size)
        headers[.contentLength] = String(size)
        if configuration.tls != nil {
            // sendfile(2) would bypass TLS: stream the file through the TLS handler instead.
            return Response(status: .ok, headers: headers, body: try await FileIO().loadFile(path: path, context: context))
        }
        let channel = context.channel
        let executor = EventLoopExecutor(context.eventLoop)
        let body = ResponseBody(contentLength: size) { writer in
            // sendfile(2) through the connection's FileSender, on its event loop, after the head.
            // Opened only here, so a response that is never sent holds no descriptor.
            let sent: EventLoopFuture<Void> = try await withTaskExecutorPreference(executor) {
                guard let sender = try? channel.pipeline.syncOperations.handler(type: FileSender.self) else {
                    throw GatewayError(.internalServerError, "the connection cannot send files")
                }
                let fd = open(path, O_RDONLY | O_CLOEXEC)
                guard fd >= 0 else { throw GatewayError(.gone, "the result of job \(id) is no longer on disk") }
                return sender.send(descriptor: fd, offset: 0, length: size, on: channel.eventLoop)
            }
            try await sent.get()
            try await writer.finish(nil)
        }
        return Response(status: .ok, headers: headers, body: body)
    }

    /// Server-sent events: stored events after Last-Event-ID, then live ones; ends after the terminal event.
    func events(_ request: Request, _ context: GatewayRequestContext) async throws -> Response {
        let id = try await accessibleJob(context).id
        let principal = context.principal.name
        var after = 0
        if let raw = request.headers[.lastEventID] ?? request.uri.queryParameters["last_event_id"].map(String.init) {
            guard let v = Int(raw.trimmingCharacters(in: .whitespaces)), v >= 0 else {
                throw GatewayError.badRequest("Last-Event-ID must be a non-negative integer (an event's seq)")
            }
            after = v
        }
        let startAfter = after
        // Taken last, after everything that can refuse the request: from here the stream's body gives it back.
        try limiter.acquire(.eventStream, for: principal)
        let hub = self.hub
        let eventLoop = context.eventLoop
        let channel = context.channel
        let executor = EventLoopExecutor(eventLoop)
        let store = self.store
        let metrics = self.metrics
        let backlog = configuration.sseBacklog
        return eventStreamResponse(principal: principal) { writer in
            // On the connection's own event loop, beside its relay.
            try await withTaskExecutorPreference(executor) {
                let relay = try channel.pipeline.syncOperations.handler(type: SSERelay.self)
                let finished = relay.begin(backlog: backlog) { metrics.bytesRelayed.increment(by: Int64($0)) }
                // Subscribed before reading the store: an event is stored before it is published,
                // so each one is in the store read or in the relay's buffer (or both).
                let subscription = hub.subscribe(job: id, relay: relay, on: eventLoop)
                defer { hub.unsubscribe(job: id, id: subscription) }
                var stream = SSEStream(after: startAfter)
                var out = ByteBuffer(string: "retry: 2000\n\n")
                stream.append(try await store.events(job: id, after: startAfter).map(SSEFrame.init), to: &out)
                if !stream.finished, let job = try await store.job(id), job.status.isTerminal {
                    // The status can flip a moment before its terminal event is stored: read once more, then end.
                    stream.append(try await store.events(job: id, after: stream.last).map(SSEFrame.init), to: &out)
                    stream.finished = true
                }
                metrics.bytesRelayed.increment(by: Int64(out.readableBytes))
                try await writer.write(out)
                if stream.finished {
                    relay.finish()
                } else {
                    relay.goLive(after: stream.last)
                }
                try await finished.get()
            }
            try await writer.finish(nil)
        }
    }

    func metricsText() async throws -> Response {
        let counts = try await store.countByStatus()
        for (status, meter) in metrics.jobsByStatus { meter.set(counts[status] ?? 0) }
        metrics.uploadsInProgress.set(limiter.held(.upload))
        return Response(
            status: .ok, headers: [.contentType: "text/plain; version=0.0.4; charset=utf-8"],
            body: .init(byteBuffer: ByteBuffer(string: metricsExposition())))
    }
}

func json<T: Encodable>(_ value: T, status: HTTPResponse.Status = .ok) throws -> Response {
    let e = JSONEncoder()
    e.outputFormatting = [.sortedKeys, .withoutEscapingSlashes]
    return Response(status: status, headers: [.contentType: "application/json"], body: .init(byteBuffer: ByteBuffer(bytes: try e.encode(value))))
}

/// `Authorization: Bearer <token>` → the caller's principal (`PrincipalDirectory`: hashed tokens,
/// constant-time comparison). Without any tokens configured every caller is `Principal.local`.
struct BearerAuth: RouterMiddleware {
    typealias Context = GatewayRequestContext
    let principals: PrincipalDirectory?

    func handle(_ request: Request, context: Context, next: (Request, Context) async throws -> Response) async throws -> Response {
        guard let principals, !principals.isOpen else { return try await next(request, context) }
        guard let header = request.headers[.authorization], header.lowercased().hasPrefix("bearer ") else { throw GatewayError.unauthorized }
        let presented = header.dropFirst(7).trimmingCharacters(in: .whitespaces)
        guard let principal = principals.principal(forBearer: presented) else { throw GatewayError.unauthorized }
        var context = context
        context.principal = principal
        return try await next(request, context)
    }
}

extension GatewayRoutes {
    /// The nonce of a retry: `{"nonce": "…"}` in the body if given (checked like a submission's),
    /// otherwise 16 fresh random bytes — the caller learns it from the answer.
    static func retryNonce(_ request: Request) async throws -> String {
        let body = try await smallBody(request, what: "a retry")
        if body.readableBytes > 0 {
            guard let object = try? JSONSerialization.jsonObject(with: Data(buffer: body)) as? [String: Any] else {
                throw GatewayError.badRequest("the body must be a JSON object, e.g. {\"nonce\": \"c0ffee\"}, or empty")
            }
            if let given = object["nonce"] {
                guard let text = given as? String else { throw GatewayError.badRequest("nonce must be a string of hex digits") }
                switch Nonce.validate(text) {
                case .success(let n): return n
                case .failure(let e): throw GatewayError.badRequest(e.description)
                }
            }
        }
        var random = SystemRandomNumberGenerator()
        return (0..<16).map { _ in UInt8.random(in: 0...255, using: &random) }.hexString
    }
}

extension GatewayRoutes {
    /// `{"reason": "…"}` in a cancel's body, if any (at most 500 characters, no control characters).
    static func cancellationReason(_ request: Request) async throws -> String? {
        let body = try await smallBody(request, what: "a cancel")
        guard body.readableBytes > 0 else { return nil }
        guard let object = try? JSONSerialization.jsonObject(with: Data(buffer: body)) as? [String: Any] else {
            throw GatewayError.badRequest("the body must be a JSON object, e.g. {\"reason\": \"superseded\"}, or empty")
        }
        guard let given = object["reason"] else { return nil }
        guard let reason = given as? String, reason.count <= 500, !reason.unicodeScalars.contains(where: { $0.value < 0x20 }) else {
            throw GatewayError.badRequest("reason must be a string of at most 500 characters without control characters")
        }
        return reason
    }
}

extension GatewayRoutes {
    /// The optional JSON body of a cancel or retry: at most 4 KiB, or a plain-text 413 (not the
    /// framework's empty one).
    static func smallBody(_ request: Request, what: String) async throws -> ByteBuffer {
        do { return try await request.body.collect(upTo: 4096) } catch {
            throw GatewayError(.contentTooLarge, "the body of \(what) is at most 4096 bytes")
        }
    }
}
