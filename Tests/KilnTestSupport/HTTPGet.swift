import Foundation

/// Minimal HTTP/1.1 GET over a blocking socket, for probing monitor endpoints without a client library.
public enum HTTPGet {
    public struct Response: Sendable {
        public var status: Int
        public var body: String
    }

    public static func get(port: Int, path: String, host: String = "127.0.0.1") throws -> Response {
        let conn = try RawSocket(port: port, host: host)
        try conn.send(Array("GET \(path) HTTP/1.1\r\nHost: \(host)\r\nConnection: close\r\n\r\n".utf8))
        let text = String(decoding: try conn.readAll(timeout: 10), as: UTF8.self)
        guard let headEnd = text.range(of: "\r\n\r\n") else { throw POSIXError(.EPROTO) }
        let statusLine = text[..<headEnd.lowerBound].split(separator: "\r\n").first ?? ""
        let status = Int(statusLine.split(separator: " ").dropFirst().first ?? "") ?? 0
        var body = String(text[headEnd.upperBound...])
        if text[..<headEnd.lowerBound].lowercased().contains("transfer-encoding: chunked") {
            body = dechunk(body)
        }
        return Response(status: status, body: body)
    }

    static func dechunk(_ s: String) -> String {
        var out = ""
        var rest = Substring(s)
        while let nl = rest.range(of: "\r\n") {
            guard let n = Int(rest[..<nl.lowerBound], radix: 16), n > 0 else { break }
            let start = nl.upperBound
            let bytes = Array(rest[start...].utf8)
            out += String(decoding: bytes.prefix(n), as: UTF8.self)
            rest = Substring(String(decoding: bytes.dropFirst(n), as: UTF8.self)).dropFirst(2)
        }
        return out
    }
}

