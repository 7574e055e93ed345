import Foundation
import KilnBusClient
import KilnMessages
import KilnTestSupport
import Logging
import NIOHTTP1
import Testing

@testable import KilnGateway

/// Every 400/401/404/409/413/415 case of the API, against a real gateway; nothing is stored for a rejected request.
@Suite(.serialized) struct GatewayBadInputTests {

    @Test func rejectsBadJSONSubmissions() async throws {
        let archive = Data(try await Fixtures.archive(Fixtures.helloCrate(), root: "proj", zip: false)).base64EncodedString()
        let c = try await TestCluster(gatewayArgs: ["--max-body", "1048576"])
        defer { c.stop() }
        let cases: [(String, Any, Int, String)] = [
            ("nonce missing", ["repo_url": "https://example.invalid/x.git"], 400, "nonce is missing"),
            ("nonce not hex", ["nonce": "zz11", "repo_url": "https://example.invalid/x.git"], 400, "nonce must be hex"),
            ("nonce odd", ["nonce": "abc", "repo_url": "https://example.invalid/x.git"], 400, "odd number"),
            ("nonce too long", ["nonce": String(repeating: "ab", count: 17), "repo_url": "https://example.invalid/x.git"], 400, "at most 16 bytes"),
            ("neither", ["nonce": "abcd"], 400, "not neither"),
            ("both", ["nonce": "abcd", "repo_url": "https://example.invalid/x.git", "source_data": archive], 400, "not both"),
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

    /// #18 item 4: no route matches → a plain-text 404 naming the path; a known path with another
    /// method → 405 with `Allow`.
    @Test func unknownRoutesAndMethodsAnswerInPlainText() async throws {
        let c = try await TestCluster()
        defer { c.stop() }
        let missing = try await c.http(.GET, "/nope/deeper")
        #expect(missing.status == 404 && missing.body.contains("no endpoint GET /nope/deeper") && missing.body.contains("openapi.yaml"), "\(missing.body)")
        #expect(missing.headers.first(name: "Content-Type")?.hasPrefix("text/plain") == true)
        let wrongMethod = try await c.http(.DELETE, "/build/j123")
        #expect(wrongMethod.status == 405 && wrongMethod.body.contains("answers GET, not DELETE"), "\(wrongMethod.status) \(wrongMethod.body)")
        #expect(wrongMethod.headers.first(name: "Allow") == "GET")
        let post = try await c.http(.PUT, "/build")
        #expect(post.status == 405 && post.headers.first(name: "Allow") == "POST", "\(post.body)")
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

/// #11 item 5: numbers from the bus are range-checked before any arithmetic.
@Suite struct GatewayBusNumbersTests {
    @Test(arguments: [
        (0, 1, Int64(10), 10, Int64(0)), (0, 2, Int64(15), 10, Int64(0)), (1, 2, Int64(15), 5, Int64(10)),
    ])
    func realChunksHaveOffsets(index: Int, count: Int, size: Int64, bytes: Int, offset: Int64) {
        #expect(ChunkBounds.resultChunkOffset(index: index, count: count, size: size, bytes: bytes, maxSize: 1 << 30) == offset)
    }

    @Test(arguments: [
        (Int.max - 1, Int.max, Int64(1 << 20), 1 << 20),  // index × bytes overflows
        (5, 2, Int64(100), 10),  // index past count
        (0, 2, Int64.max, 10),  // size over the limit
        (1, 2, Int64(5), 10),  // last chunk longer than the file
        (0, 1, Int64(-1), 1),  // negative size
        (3, 5, Int64(20), 10),  // ends past the file
    ])
    func impossibleChunksAreRefused(index: Int, count: Int, size: Int64, bytes: Int) {
        #expect(ChunkBounds.resultChunkOffset(index: index, count: count, size: size, bytes: bytes, maxSize: 1 << 30) == nil)
    }

    @Test func sourceChunkOffsets() {
        #expect(ChunkBounds.sourceChunkOffset(index: 2, chunkSize: 10, size: 25) == 20)
        #expect(ChunkBounds.sourceChunkOffset(index: 3, chunkSize: 10, size: 25) == nil)
        #expect(ChunkBounds.sourceChunkOffset(index: Int.max, chunkSize: 1 << 20, size: 25) == nil)
        #expect(ChunkBounds.sourceChunkOffset(index: -1, chunkSize: 10, size: 25) == nil)
    }

    /// Before the fix, a source request with `index` = Int64.max made the gateway trap and exit.
    @Test func overflowingHeadersFromTheBusDoNotStopTheGateway() async throws {
        let c = try await TestCluster(gatewayArgs: ["--inline-source-limit", "16"])
        defer { c.stop() }
        let id = try await c.submit(Fixtures.helloCrate())  // stored as an upload (above the inline limit)
        let client = try await BusClient.connect(.init(host: "127.0.0.1", port: c.broker.port), logger: Logger(label: "attacker"))
        for index in [String(Int64.max), "-1", "99999999999999999999", "1000"] {
            let reply = try await client.request(Subjects.source(id), payload: [UInt8](), headers: ["index": index], timeout: .seconds(5))
            #expect(reply.status != "200", "index \(index)")
        }
        let good = try await client.request(Subjects.source(id), payload: [UInt8](), headers: ["index": "0"], timeout: .seconds(5))
        #expect(good.status == "200" && !good.payloadBytes.isEmpty)
        let chunk = try await client.request(
            Subjects.result(id), payload: [UInt8](repeating: 1, count: 64),
            headers: [
                ResultChunkHeaders.index: String(Int64.max - 1), ResultChunkHeaders.count: String(Int64.max), ResultChunkHeaders.sha256: "00",
                ResultChunkHeaders.size: String(Int64.max), ResultChunkHeaders.workerID: "nobody",
            ], timeout: .seconds(5))
        #expect(!chunk.payloadBytes.isEmpty)
        // Still serving, and it counted what it refused.
        #expect(try await c.http(.GET, "/build/\(id)").status == 200)
        let metrics = try HTTPGet.get(port: c.gateway.port, path: "/metrics")
        #expect(metrics.body.contains("kiln_gateway_bus_messages_rejected_total{reason=\"bad_chunk\"} 3"), "\(metrics.body)")
        await client.close()
    }
}
