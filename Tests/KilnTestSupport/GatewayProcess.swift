import Foundation

/// A kiln-gateway process on loopback (port picked by the OS), with its own data directory.
public final class GatewayProcess: @unchecked Sendable {
    public let process: LaunchedProcess
    public let port: Int
    public let dataDirectory: String
    public var url: String { "http://127.0.0.1:\(port)" }

    public init(brokerPort: Int, dataDirectory: String, port: Int = 0, arguments: [String] = [], environment: [String: String]? = nil) async throws {
        self.dataDirectory = dataDirectory
        process = try await LaunchedProcess(
            BuiltProducts.path("kiln-gateway"),
            [
                "--host", "127.0.0.1", "--port", String(port), "--data", dataDirectory,
                "--broker", "kiln://127.0.0.1:\(brokerPort)", "--log-level", "debug",
            ] + arguments,
            environment: environment)
        let addr = try await process.waitForLine(prefix: "kiln-gateway listening on ")
        self.port = Int(addr.split(separator: ":").last!)!
    }

    public func stop() { process.stop() }
}

/// A server-sent event as a client sees it.
public struct SSEEvent: Sendable, Equatable {
    public var id: Int?
    public var event: String?
    public var data: String

    public init(id: Int?, event: String?, data: String) {
        self.id = id
        self.event = event
        self.data = data
    }

    /// One event from its block of `field: value` lines (nil for a comment or keepalive).
    public init?(block: String) {
        var e = SSEEvent(id: nil, event: nil, data: "")
        var isEvent = false
        for line in block.split(separator: "\n") {
            if line.hasPrefix("id: ") {
                e.id = Int(line.dropFirst(4))
                isEvent = true
            }
            if line.hasPrefix("event: ") {
                e.event = String(line.dropFirst(7))
                isEvent = true
            }
            if line.hasPrefix("data: ") { e.data += String(line.dropFirst(6)) }
        }
        guard isEvent else { return nil }
        self = e
    }
}

/// Reads an SSE stream over a raw socket until the server ends it (or `timeout`).
public enum SSEClient {
    public static func read(port: Int, path: String, lastEventID: Int? = nil, timeout: Double = 60) async throws -> (status: Int, events: [SSEEvent], ended: Bool) {
        let socket = try RawSocket(port: port)
        var req = "GET \(path) HTTP/1.1\r\nHost: 127.0.0.1\r\nAccept: text/event-stream\r\nConnection: close\r\n"
        if let lastEventID { req += "Last-Event-ID: \(lastEventID)\r\n" }
        try await socket.send(Array((req + "\r\n").utf8))
        var bytes: [UInt8] = []
        var ended = false
        let deadline = Date().addingTimeInterval(timeout)
        while deadline.timeIntervalSinceNow > 0 {
            switch await socket.readSome(timeout: deadline.timeIntervalSinceNow) {
            case .bytes(let b): bytes += b
            case .eof: ended = true
            case .timeout: break
            }
            if ended { break }
        }
        let text = String(decoding: bytes, as: UTF8.self)
        guard let headEnd = text.range(of: "\r\n\r\n") else { return (0, [], ended) }
        let status = Int(text[..<headEnd.lowerBound].split(separator: " ").dropFirst().first ?? "") ?? 0
        var body = String(text[headEnd.upperBound...])
        if text[..<headEnd.lowerBound].lowercased().contains("transfer-encoding: chunked") { body = HTTPGet.dechunk(body) }
        let events = body.components(separatedBy: "\n\n").compactMap(SSEEvent.init(block:))
        return (status, events, ended)
    }
}
