import Foundation
import KilnTestSupport
import NIOHTTP1
import Testing

/// Every 400/401/404/409/413/415 case of the API, against a real gateway; nothing is stored for a rejected request.
@Suite(.serialized) struct GatewayBadInputTests {
    static let archive = Data(try! Fixtures.archive(Fixtures.helloCrate(), root: "proj", zip: false)).base64EncodedString()

    @Test func rejectsBadJSONSubmissions() async throws {
        let c = try await TestCluster(gatewayArgs: ["--max-body", "1048576"])
        defer { c.stop() }
        let cases: [(String, Any, Int, String)] = [
            ("nonce missing", ["repo_url": "https://example.invalid/x.git"], 400, "nonce is missing"),
            ("nonce not hex", ["nonce": "zz11", "repo_url": "https://example.invalid/x.git"], 400, "nonce must be hex"),
            ("nonce odd", ["nonce": "abc", "repo_url": "https://example.invalid/x.git"], 400, "odd number"),
            ("nonce too long", ["nonce": String(repeating: "ab", count: 17), "repo_url": "https://example.invalid/x.git"], 400, "at most 16 bytes"),
            ("neither", ["nonce": "abcd"], 400, "not neither"),
            ("both", ["nonce": "abcd", "repo_url": "https://example.invalid/x.git", "source_data": Self.archive], 400, "not both"),
            ("wrong type", ["nonce": 1234, "repo_url": "https://example.invalid/x.git"], 400, "must be a string"),
            ("bad base64", ["nonce": "abcd", "source_data": "@@not base64@@"], 400, "not valid base64"),
            ("empty archive", ["nonce": "abcd", "source_data": ""], 400, "archive is empty"),
            ("not an archive", ["nonce": "abcd", "source_data": Data("plain text".utf8).base64EncodedString()], 400, "ZIP or a gzip"),
            ("file url", ["nonce": "abcd", "repo_url": "file:///etc/passwd"], 400, "scheme 'file' is not allowed"),
            ("ssh url", ["nonce": "abcd", "repo_url": "ssh://git@example.invalid/x.git"], 400, "scheme 'ssh' is not allowed"),
            ("local path", ["nonce": "abcd", "repo_url": "/srv/repo.git"], 400, "local paths are not allowed"),
            ("credentials", ["nonce": "abcd", "repo_url": "https://user:pw@example.invalid/x.git"], 400, "must not embed credentials"),
        ]
        for (name, body, status, text) in cases {
            let r = try await c.http(.POST, "/build", json: body)
            #expect(r.status == status, "\(name): \(r.status) \(r.body)")
            #expect(r.body.contains(text), "\(name): \(r.body)")
            #expect(r.headers.first(name: "Content-Type")?.hasPrefix("text/plain") == true, "\(name)")
        }
        let malformed = try await c.http(.POST, "/build", body: Array("{\"nonce\": ".utf8), contentType: "application/json")
        #expect(malformed.status == 400 && malformed.body.contains("not valid JSON"))
        let array = try await c.http(.POST, "/build", body: Array("[1,2]".utf8), contentType: "application/json")
        #expect(array.status == 400 && array.body.contains("must be an object"))
        let type = try await c.http(.POST, "/build", body: Array("nonce=ab".utf8), contentType: "text/plain")
        #expect(type.status == 415)
        let big = try await c.http(.POST, "/build", body: [UInt8](repeating: 0x20, count: 2 << 20), contentType: "application/json")
        #expect(big.status == 413, "\(big.body)")
        // Multipart without boundary / without a source part.
        let noBoundary = try await c.http(.POST, "/build", body: Array("x".utf8), contentType: "multipart/form-data")
        #expect(noBoundary.status == 400 && noBoundary.body.contains("boundary"))
        let form = "--XyZ\r\nContent-Disposition: form-data; name=\"nonce\"\r\n\r\nabcd\r\n--XyZ--\r\n"
        let noSource = try await c.http(.POST, "/build", body: Array(form.utf8), contentType: "multipart/form-data; boundary=XyZ")
        #expect(noSource.status == 400 && noSource.body.contains("'source' file part"), "\(noSource.body)")
        // Nothing was stored.
        let metrics = try HTTPGet.get(port: c.gateway.port, path: "/metrics")
        #expect(!metrics.body.contains("status=\"waiting\"} 1"), "\(metrics.body)")
        for s in ["waiting", "building", "ready", "error", "cancelled"] {
            #expect(metrics.body.contains("kiln_gateway_jobs{status=\"\(s)\"} 0"), "\(s): \(metrics.body)")
        }
    }

    @Test func unknownJobsAndUnreadyResults() async throws {
        let c = try await TestCluster()
        defer { c.stop() }
        for (method, path) in [(HTTPMethod.GET, "/build/nope"), (.GET, "/build/nope/events"), (.GET, "/build/nope/result"), (.POST, "/build/nope/cancel")] {
            let r = try await c.http(method, path)
            #expect(r.status == 404, "\(path)")
            #expect(r.body.contains("no job with id 'nope'"))
        }
        // No workers: the job waits; its result is not ready.
        let id = try await c.submit(Fixtures.helloCrate())
        let r = try await c.http(.GET, "/build/\(id)/result")
        #expect(r.status == 409)
        #expect(r.body.contains("not ready") && r.body.contains("waiting"), "\(r.body)")
        let sse = try SSEClient.read(port: c.gateway.port, path: "/build/\(id)/events", lastEventID: nil, timeout: 0.5)
        #expect(sse.status == 200)
        #expect(!sse.ended, "a waiting job's stream stays open")
        let badID = try HTTPGet.get(port: c.gateway.port, path: "/build/\(id)/events?last_event_id=x")
        #expect(badID.status == 400)
    }

    @Test func bearerTokens() async throws {
        let c = try await TestCluster(gatewayArgs: ["--token", "s3cret-token"])
        defer { c.stop() }
        let none = try await c.http(.GET, "/build/x")
        #expect(none.status == 401)
        #expect(none.headers.first(name: "WWW-Authenticate")?.hasPrefix("Bearer") == true)
        let wrong = try await c.http(.GET, "/build/x", headers: [("Authorization", "Bearer nope")])
        #expect(wrong.status == 401)
        let right = try await c.http(.GET, "/build/x", headers: [("Authorization", "Bearer s3cret-token")])
        #expect(right.status == 404)
        let keys = try await c.http(.GET, "/keys")
        #expect(keys.status == 200, "keys are public")
        #expect((keys.json["keys"] as? [[String: Any]])?.count == 1)
    }
}
