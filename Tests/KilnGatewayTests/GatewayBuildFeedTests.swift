import Foundation
import KilnTestSupport
import Testing

/// `GET /builds/events` (#17): the dashboard's live list. Each caller sees its own jobs appear and
/// change, never another's; an admin sees everyone's.
@Suite(.serialized) struct GatewayBuildFeedTests {
    struct Seen: Sendable {
        var job: String
        var status: String
    }

    /// Reads the feed as `token` until `until` holds for the events so far or `seconds` pass.
    static func feed(port: Int, token: String, seconds: Double, until: ([Seen]) -> Bool = { _ in false }) async throws -> [Seen] {
        let socket = try RawSocket(port: port)
        try await socket.send(
            Array("GET /builds/events HTTP/1.1\r\nHost: 127.0.0.1\r\nAuthorization: Bearer \(token)\r\nConnection: close\r\n\r\n".utf8))
        var text = ""
        var events: [Seen] = []
        let deadline = Date().addingTimeInterval(seconds)
        while deadline.timeIntervalSinceNow > 0 {
            guard case .bytes(let b) = await socket.readSome(timeout: min(0.2, deadline.timeIntervalSinceNow)) else { continue }
            text += String(decoding: b, as: UTF8.self)
            events = text.components(separatedBy: "\n").filter { $0.hasPrefix("data: ") }
                .compactMap { try? JSONSerialization.jsonObject(with: Data($0.dropFirst(6).utf8)) as? [String: Any] }
                .map { Seen(job: $0["job_id"] as? String ?? "", status: $0["status"] as? String ?? "") }
            if until(events) { break }
        }
        return events
    }

    @Test func eachCallerSeesItsOwnJobsAppearAndChangeAndNobodyElses() async throws {
        let (c, pre) = try await PrincipalsTests.clusterWithThreePrincipals()
        defer {
            c.stop()
            withExtendedLifetime(pre) {}  // the gateway reads the tokens file on every request
        }
        func auth(_ token: String) -> [(String, String)] { PrincipalsTests.auth(token) }
        func submit(_ token: String) async throws -> String { try await PrincipalsTests.submit(c, as: token) }
        let port = c.gateway.port
        let a = try await submit("alice-token")
        let b = try await submit("bob-token")
        // Alice's feed: her job now (waiting: no worker runs here), then its change once she cancels it.
        let watching = Task.detached {
            // Generous: beside the whole suite (VMs included) a busy machine answers slowly; it ends as soon as it sees the change.
            try await Self.feed(port: port, token: "alice-token", seconds: 90) { events in events.contains { $0.status == "cancelled" } }
        }
        #expect(await eventually(within: .seconds(60)) { (try? await c.http(.GET, "/build/\(a)", headers: auth("alice-token")))?.status == 200 })
        // Cancel once the feed has had time to send the first state (it looks once a second).
        try await Task.sleep(for: .milliseconds(1500))
        let cancelled = try await c.http(.POST, "/build/\(a)/cancel", json: ["reason": "feed test"], headers: auth("alice-token"))
        #expect([200, 202].contains(cancelled.status), "\(cancelled.body)")
        let events = try await watching.value
        #expect(events.allSatisfy { $0.job == a }, "alice saw someone else's job: \(events)")
        let statuses = events.map(\.status)
        #expect(statuses.first == "waiting" && statuses.last == "cancelled", "\(statuses)")
        // An admin's feed starts with every job.
        let everyone = try await Self.feed(port: port, token: "root-token", seconds: 60) { events in
            Set(events.map(\.job)) == [a, b]
        }
        #expect(Set(everyone.map(\.job)) == [a, b])
        // Without a token: refused like the rest of the API.
        let anonymous = try RawSocket(port: port)
        try await anonymous.send(Array("GET /builds/events HTTP/1.1\r\nHost: 127.0.0.1\r\nConnection: close\r\n\r\n".utf8))
        guard case .bytes(let head) = await anonymous.readSome(timeout: 5) else {
            Issue.record("no answer")
            return
        }
        #expect(String(decoding: head, as: UTF8.self).hasPrefix("HTTP/1.1 401"))
    }
}
