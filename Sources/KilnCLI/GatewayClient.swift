import ArgumentParser
import AsyncHTTPClient
import Foundation
import KilnCore
import NIOConcurrencyHelpers
import NIOCore
import NIOHTTP1
import NIOSSL

/// Options every gateway-facing command shares.
struct GatewayOptions: ParsableArguments {
    @Option(help: "Gateway URL (env KILN_GATEWAY; default http://127.0.0.1:8080).") var gateway: String?
    @Option(help: "Bearer token (env KILN_TOKEN).") var token: String?
    @Option(help: "PEM CA certificate(s) to trust for an https gateway instead of the system's (env KILN_GATEWAY_CA).") var caFile: String?

    var client: GatewayClient {
        get throws {
            let env = ProcessInfo.processInfo.environment
            var base = gateway ?? env["KILN_GATEWAY"] ?? "http://127.0.0.1:8080"
            while base.hasSuffix("/") { base.removeLast() }
            let ca = caFile ?? env["KILN_GATEWAY_CA"]
            if let ca, !FileManager.default.isReadableFile(atPath: ca) { throw CLIError("cannot read the CA file \(ca)") }
            return GatewayClient(base: base, token: token ?? env["KILN_TOKEN"], http: GatewayClient.client(trusting: ca))
        }
    }
}

/// A thin async-http-client wrapper for the gateway API; HTTP errors become the gateway's own message.
struct GatewayClient: Sendable {
    let base: String
    let token: String?
    /// Certificates are always verified, against the system's roots or only the given CA file.
    let http: HTTPClient

    /// One client per CA file for the life of the process (like `HTTPClient.shared`, never shut down).
    /// A connection that fails (refused, or a certificate that does not verify) fails the command at
    /// once instead of being retried until the request's deadline.
    static func client(trusting caFile: String?) -> HTTPClient {
        clients.withLockedValue { cache in
            if let c = cache[caFile ?? ""] { return c }
            var tls = TLSConfiguration.makeClientConfiguration()
            if let caFile { tls.trustRoots = .file(caFile) }
            tls.minimumTLSVersion = .tlsv12
            var configuration = HTTPClient.Configuration(tlsConfiguration: tls)
            configuration.connectionPool.retryConnectionEstablishment = false
            configuration.timeout.connect = .seconds(15)
            let c = HTTPClient(eventLoopGroupProvider: .singleton, configuration: configuration)
            cache[caFile ?? ""] = c
            return c
        }
    }
    private static let clients = NIOLockedValueBox<[String: HTTPClient]>([:])

    /// A failed connection, saying what to do when it was the certificate.
    func unreachable(_ error: any Error) -> CLIError {
        if case NIOSSLError.handshakeFailed = error {
            return CLIError(
                "the gateway at \(base) presented a TLS certificate that does not verify (\(error)); "
                    + "if it is signed by your own CA, pass --ca-file or set KILN_GATEWAY_CA")
        }
        return CLIError("cannot reach the gateway at \(base): \(error)")
    }

    func request(_ method: HTTPMethod, _ path: String, body: [UInt8]? = nil, contentType: String? = nil) -> HTTPClientRequest {
        var r = HTTPClientRequest(url: base + path)
        r.method = method
        if let token { r.headers.add(name: "Authorization", value: "Bearer \(token)") }
        if let body {
            r.body = .bytes(ByteBuffer(bytes: body))
            if let contentType { r.headers.add(name: "Content-Type", value: contentType) }
        }
        return r
    }

    func send(_ method: HTTPMethod, _ path: String, body: [UInt8]? = nil, contentType: String? = nil) async throws -> [String: Any] {
        let response: HTTPClientResponse
        do { response = try await http.execute(request(method, path, body: body, contentType: contentType), timeout: .seconds(300)) } catch {
            throw unreachable(error)
        }
        let bytes = try await response.body.collect(upTo: 16 << 20)
        guard (200..<300).contains(response.status.code) else {
            throw CLIError("gateway answered \(response.status.code): \(String(buffer: bytes).trimmingCharacters(in: .whitespacesAndNewlines))")
        }
        return (try? JSONSerialization.jsonObject(with: Data(bytes.readableBytesView)) as? [String: Any]) ?? [:]
    }

    /// Streams `GET /build/{id}/events`, calling `onEvent(type, json)` per event; returns at the stream's end.
    func follow(_ id: String, onEvent: (String, [String: Any]) async throws -> Void) async throws {
        var lastID: Int?
        // A gateway restart or a dropped stream is resumed where it stopped (Last-Event-ID).
        var backoff = Backoff(initial: .milliseconds(500), maximum: .seconds(5), maxAttempts: 20)
        while true {
            var r = request(.GET, "/build/\(id)/events")
            if let lastID { r.headers.add(name: "Last-Event-ID", value: String(lastID)) }
            let response: HTTPClientResponse
            do { response = try await http.execute(r, timeout: .hours(24)) } catch {
                guard backoff.attemptFailed() else { throw unreachable(error) }
                try await Task.sleep(for: backoff.nextDelay())
                continue
            }
            guard response.status == .ok else {
                let body = try await response.body.collect(upTo: 1 << 20)
                throw CLIError("gateway answered \(response.status.code): \(String(buffer: body).trimmingCharacters(in: .whitespacesAndNewlines))")
            }
            var pending = ""
            var type = "message"
            var data = ""
            var terminal = false
            do {
                for try await chunk in response.body {
                    pending += String(buffer: chunk)
                    while let nl = pending.firstIndex(of: "\n") {
                        let line = String(pending[..<nl])
                        pending = String(pending[pending.index(after: nl)...])
                        if line.isEmpty {
                            if !data.isEmpty {
                                let json = (try? JSONSerialization.jsonObject(with: Data(data.utf8)) as? [String: Any]) ?? [:]
                                try await onEvent(type, json)
                                if ["done", "failed", "cancelled"].contains(type) { terminal = true }
                            }
                            type = "message"
                            data = ""
                        } else if line.hasPrefix("id: ") {
                            lastID = Int(line.dropFirst(4))
                        } else if line.hasPrefix("event: ") {
                            type = String(line.dropFirst(7))
                        } else if line.hasPrefix("data: ") {
                            data += line.dropFirst(6)
                        }
                    }
                }
            } catch {
                // Dropped (e.g. a slow terminal): resume from the last event seen.
            }
            if terminal { return }
            guard backoff.attemptFailed() else {
                throw CLIError("the event stream of \(id) kept ending before the build did (\(backoff.attempts) times); see `kiln status \(id)`")
            }
            try await Task.sleep(for: backoff.nextDelay())
        }
    }

    func download(_ id: String, to path: String) async throws -> Int64 {
        var response = try await http.execute(request(.GET, "/build/\(id)/result"), timeout: .seconds(3600))
        // Right after `done` the job may still be settling; a 409 is worth a short retry.
        for _ in 0..<10 where response.status == .conflict {
            try await Task.sleep(for: .milliseconds(300))
            response = try await http.execute(request(.GET, "/build/\(id)/result"), timeout: .seconds(3600))
        }
        guard response.status == .ok else {
            let body = try await response.body.collect(upTo: 1 << 20)
            throw CLIError("gateway answered \(response.status.code): \(String(buffer: body).trimmingCharacters(in: .whitespacesAndNewlines))")
        }
        guard FileManager.default.createFile(atPath: path, contents: nil), let fh = FileHandle(forWritingAtPath: path) else {
            throw CLIError("cannot write \(path)")
        }
        defer { try? fh.close() }
        var total: Int64 = 0
        for try await chunk in response.body {
            try fh.write(contentsOf: Data(chunk.readableBytesView))
            total += Int64(chunk.readableBytes)
        }
        return total
    }
}

struct CLIError: Error, CustomStringConvertible {
    let description: String
    init(_ d: String) { description = d }
}
