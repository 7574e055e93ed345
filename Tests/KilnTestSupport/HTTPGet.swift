import Foundation

/// Minimal HTTP/1.1 GET over a raw socket (awaiting, never blocking a thread), for probing monitor endpoints without a client library.
public enum HTTPGet {
    public struct Response: Sendable {
        public var status: Int
        public var body: String
    }

    public static func get(port: Int, path: String, host: String = "127.0.0.1") async throws -> Response {
        let conn = try RawSocket(port: port, host: host)
        try await conn.send(Array("GET \(path) HTTP/1.1\r\nHost: \(host)\r\nConnection: close\r\n\r\n".utf8))
        let text = String(decoding: try await conn.readAll(timeout: 10), as: UTF8.self)
        guard let headEnd = text.range(of: "\r\n\r\n") else { throw POSIXError(.EPROTO) }
        let statusLine = text[..<headEnd.lowerBound].split(separator: "\r\n").first ?? ""
        let status = Int(statusLine.split(separator: " ").dropFirst().first ?? "") ?? 0
        var body = String(text[headEnd.upperBound...])
        if text[..<headEnd.lowerBound].lowercased().contains("transfer-encoding: chunked") {
            body = dechunk(body)
        }
        return Response(status: status, body: body)
    }

    /// Decodes a chunked body (on bytes: "\r\n" is one Character in Swift strings).
    public static func dechunk(_ s: String) -> String {
        let bytes = Array(s.utf8)
        var out: [UInt8] = []
        var i = 0
        while i < bytes.count {
            var j = i
            while j + 1 < bytes.count, !(bytes[j] == 13 && bytes[j + 1] == 10) { j += 1 }
            guard j + 1 < bytes.count, let n = Int(String(decoding: bytes[i..<j], as: UTF8.self), radix: 16), n > 0 else { break }
            let start = j + 2
            let end = min(start + n, bytes.count)
            out += bytes[start..<end]
            i = end + 2
        }
        return String(decoding: out, as: UTF8.self)
    }
}
