import Foundation
import KilnTestSupport
import NIOHTTP1
import Testing

/// #12 item 2: event streams per caller and submissions per minute answer 429 with Retry-After.
@Suite(.serialized) struct RequestLimitsTests {
    @Test func eventStreamsAndSubmissionsPerCallerAreBounded() async throws {
        let c = try await TestCluster(gatewayArgs: [
            "--token", "alice:user:a-token", "--token", "bob:user:b-token",
            "--max-event-streams-per-caller", "2", "--submissions-per-minute", "3", "--sse-keepalive", "1",
        ])
        defer { c.stop() }
        func auth(_ t: String) -> [(String, String)] { [("Authorization", "Bearer \(t)")] }
        let archive = Data(try await Fixtures.archive(Fixtures.helloCrate(), root: "p", zip: false)).base64EncodedString()
        let body: [String: Any] = ["nonce": "c0ffee00", "source_data": archive, "source_name": "p.tar.gz"]
        var ids: [String] = []
        for _ in 0..<3 {
            let r = try await c.http(.POST, "/build", json: body, headers: auth("a-token"))
            #expect(r.status == 200, "\(r.body)")
            if let id = r.json["job_id"] as? String { ids.append(id) }
        }
        let fourth = try await c.http(.POST, "/build", json: body, headers: auth("a-token"))
        #expect(fourth.status == 429 && fourth.body.contains("per minute"), "\(fourth.status) \(fourth.body)")
        #expect(Int(fourth.headers.first(name: "Retry-After") ?? "") ?? 0 >= 1)
        #expect(try await c.http(.POST, "/build", json: body, headers: auth("b-token")).status == 200, "another caller has its own budget")

        // Two streams of a waiting job stay open; a third from the same caller is refused.
        func openStream() async throws -> (RawSocket, String) {
            let s = try RawSocket(port: c.gateway.port)
            try await s.send(Array("GET /build/\(ids[0])/events HTTP/1.1\r\nHost: x\r\nAuthorization: Bearer a-token\r\n\r\n".utf8))
            guard case .bytes(let head) = await s.readSome(timeout: 5) else { return (s, "") }
            return (s, String(decoding: head, as: UTF8.self))
        }
        let first = try await openStream()
        let second = try await openStream()
        #expect(first.1.hasPrefix("HTTP/1.1 200") && second.1.hasPrefix("HTTP/1.1 200"))
        let third = try await openStream()
        #expect(third.1.hasPrefix("HTTP/1.1 429") && third.1.lowercased().contains("retry-after:"), "\(third.1)")
        // Bob's streams are his own.
        let bob = try RawSocket(port: c.gateway.port)
        try await bob.send(Array("GET /build/\(ids[0])/events HTTP/1.1\r\nHost: x\r\nAuthorization: Bearer b-token\r\n\r\n".utf8))
        if case .bytes(let head) = await bob.readSome(timeout: 5) {
            #expect(String(decoding: head, as: UTF8.self).hasPrefix("HTTP/1.1 404"), "not his job: 404, not 429")
        }
        // Closing one frees its slot (at the latest when the next keepalive finds the client gone).
        first.0.shutdown()
        let reopened = try await eventually(every: .milliseconds(50)) { try await openStream().1.hasPrefix("HTTP/1.1 200") }
        #expect(reopened)
        let metrics = try await HTTPGet.get(port: c.gateway.port, path: "/metrics").body
        #expect(metrics.contains("kiln_gateway_requests_limited_total{limit=\"submissions\"} 1"))
        #expect(metrics.contains("kiln_gateway_requests_limited_total{limit=\"event_streams\"}"))
        withExtendedLifetime((second, third, bob)) {}
    }
}

extension RequestLimitsTests {
    /// A stream request the gateway refuses (a malformed Last-Event-ID) must not keep the caller's
    /// stream slot: enough of them would otherwise lock every caller that shares a principal (without
    /// tokens: everyone) out of event streams.
    @Test func refusedStreamRequestsDoNotUseUpStreamSlots() async throws {
        let c = try await TestCluster(gatewayArgs: ["--max-event-streams-per-caller", "2", "--sse-keepalive", "1"])
        defer { c.stop() }
        let archive = Data(try await Fixtures.archive(Fixtures.helloCrate(), root: "p", zip: false)).base64EncodedString()
        let submitted = try await c.http(.POST, "/build", json: ["nonce": "c0ffee00", "source_data": archive, "source_name": "p.tar.gz"])
        let id = try #require(submitted.json["job_id"] as? String, "\(submitted.body)")
        for _ in 0..<5 {
            let refused = try await c.http(.GET, "/build/\(id)/events", headers: [("Last-Event-ID", "not-a-number")])
            #expect(refused.status == 400, "\(refused.status) \(refused.body)")
        }
        let s = try RawSocket(port: c.gateway.port)
        try await s.send(Array("GET /build/\(id)/events HTTP/1.1\r\nHost: x\r\n\r\n".utf8))
        guard case .bytes(let head) = await s.readSome(timeout: 5) else {
            Issue.record("no answer")
            return
        }
        #expect(String(decoding: head, as: UTF8.self).hasPrefix("HTTP/1.1 200"), "\(String(decoding: head, as: UTF8.self))")
    }
}
