import AsyncHTTPClient
import Foundation
import KilnTestSupport
import NIOCore
import NIOHTTP1
import Synchronization

/// Why the last `follow` broke off (for failure messages).
let lastFollowError = Mutex("")

/// One gateway's public HTTP API as tests use it, over real HTTP (AsyncHTTPClient).
struct GatewayHTTP: Sendable {
    let url: String

    struct Result {
        var status: Int
        var body: String
        var headers: HTTPHeaders
        var json: [String: Any] { (try? JSONSerialization.jsonObject(with: Data(body.utf8)) as? [String: Any]) ?? [:] }
    }

    func http(
        _ method: HTTPMethod, _ path: String, json: Any? = nil, body: [UInt8]? = nil, contentType: String? = nil,
        headers: [(String, String)] = []
    ) async throws -> Result {
        var request = HTTPClientRequest(url: url + path)
        request.method = method
        for (k, v) in headers { request.headers.add(name: k, value: v) }
        if let json {
            request.body = .bytes(ByteBuffer(bytes: try JSONSerialization.data(withJSONObject: json)))
            request.headers.add(name: "Content-Type", value: contentType ?? "application/json")
        } else if let body {
            request.body = .bytes(ByteBuffer(bytes: body))
            if let contentType { request.headers.add(name: "Content-Type", value: contentType) }
        }
        let response = try await HTTPClient.shared.execute(request, timeout: .seconds(60))
        let bytes = try await response.body.collect(upTo: 512 << 20)
        return Result(status: Int(response.status.code), body: String(buffer: bytes), headers: response.headers)
    }

    func download(_ path: String, to file: String) async throws -> Result {
        let response = try await HTTPClient.shared.execute(HTTPClientRequest(url: url + path), timeout: .seconds(60))
        let bytes = try await response.body.collect(upTo: 512 << 20)
        try Data(bytes.readableBytesView).write(to: URL(fileURLWithPath: file))
        return Result(status: Int(response.status.code), body: "", headers: response.headers)
    }

    func submit(_ files: [String: String], nonce: String = "c0ffee00", extra: [String: Any] = [:]) async throws -> String {
        let archive = try await Fixtures.archive(files, root: "proj", zip: false)
        let body: [String: Any] = ["nonce": nonce, "source_data": Data(archive).base64EncodedString(), "source_name": "proj.tar.gz"]
        let r = try await http(.POST, "/build", json: body.merging(extra) { a, _ in a })
        guard r.status == 200, let id = r.json["job_id"] as? String else { throw LaunchError("submit failed: \(r.status) \(r.body)") }
        return id
    }

    func status(_ id: String) async throws -> [String: Any] { try await http(.GET, "/build/\(id)").json }

    /// Polls until the job's status is one of `accept` (and `unless` does not hold: a status the job
    /// passes through, such as `waiting` before its first attempt, is not the end).
    func waitForStatus(
        _ id: String, _ accept: Set<String>, timeout: Duration = .seconds(600), unless: ([String: Any]) -> Bool = { _ in false }
    ) async throws -> [String: Any] {
        var last: [String: Any] = [:]
        let reached = try await eventually(within: timeout, every: .milliseconds(100)) { () async throws -> [String: Any]? in
            last = try await status(id)
            return (last["status"] as? String).map(accept.contains) == true && !unless(last) ? last : nil
        }
        guard let reached else { throw LaunchError("job \(id) not in \(accept) within \(timeout): \(last)") }
        return reached
    }

    /// Follows `GET /build/{id}/events` (from `lastEventID`, if given) until the gateway ends the
    /// stream, the connection breaks (a gateway killed), or `timeout`; `onEvent` sees each event as it
    /// arrives. Returns the events and whether the stream ended normally.
    func follow(
        _ id: String, lastEventID: Int? = nil, timeout: Duration = .seconds(120), onEvent: @escaping @Sendable (SSEEvent) async -> Void = { _ in }
    ) async -> (events: [SSEEvent], ended: Bool) {
        var head = HTTPClientRequest(url: url + "/build/\(id)/events")
        head.headers.add(name: "Accept", value: "text/event-stream")
        if let lastEventID { head.headers.add(name: "Last-Event-ID", value: String(lastEventID)) }
        let request = head
        let events = Recorded<SSEEvent>()
        // The client's own timeout bounds only the response head; keepalives would hold the body open
        // for ever, so the whole stream races a timer.
        let ended = await withTaskGroup(of: Bool?.self) { group in
            group.addTask {
                do {
                    let response = try await HTTPClient.shared.execute(request, timeout: .seconds(Int64(timeout.components.seconds)))
                    var pending = ""
                    for try await chunk in response.body {
                        pending += String(buffer: chunk)
                        while let end = pending.range(of: "\n\n") {
                            let block = String(pending[..<end.lowerBound])
                            pending.removeSubrange(..<end.upperBound)
                            if let event = SSEEvent(block: block) {
                                events.append(event)
                                await onEvent(event)
                            }
                        }
                    }
                    return true
                } catch {
                    lastFollowError.withLock { $0 = "\(error)" }
                    return false
                }
            }
            group.addTask {
                try? await Task.sleep(for: timeout)
                return nil
            }
            let first = await group.next() ?? nil
            group.cancelAll()
            if first == nil { lastFollowError.withLock { $0 = "no end of stream within \(timeout)" } }
            return first ?? false
        }
        return (events.all, ended)
    }
}
