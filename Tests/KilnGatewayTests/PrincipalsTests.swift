import Crypto
import Foundation
import KilnTestSupport
import NIOHTTP1
import Testing

/// #12 item 1: each principal sees only its own jobs; an admin sees all; a revoked token is refused at once.
@Suite(.serialized) struct PrincipalsTests {
    static func digest(_ token: String) -> String { SHA256.hash(data: Array(token.utf8)).map { String(format: "%02x", $0) }.joined() }

    static func tokensFile(_ entries: [(String, String, String)]) -> String {
        let items = entries.map { "{\"name\": \"\($0.0)\", \"role\": \"\($0.1)\", \"token_sha256\": \"\(digest($0.2))\"}" }
        return "{\"principals\": [\(items.joined(separator: ", "))]}"
    }

    /// A gateway (no workers) whose tokens file has users alice and bob and admin root
    /// (`alice-token`, `bob-token`, `root-token`).
    static func clusterWithThreePrincipals() async throws -> (TestCluster, TemporaryDirectory) {
        let pre = try TemporaryDirectory(prefix: "kiln-principals")
        let file = pre.file("tokens.json")
        try tokensFile([("alice", "user", "alice-token"), ("bob", "user", "bob-token"), ("root", "admin", "root-token")])
            .write(toFile: file, atomically: true, encoding: .utf8)
        return (try await TestCluster(gatewayArgs: ["--tokens-file", file]), pre)
    }

    static func auth(_ token: String) -> [(String, String)] { [("Authorization", "Bearer \(token)")] }

    /// Submits a hello crate as `token`'s principal; returns the job id.
    static func submit(_ c: TestCluster, as token: String) async throws -> String {
        let archive = try await Fixtures.archive(Fixtures.helloCrate(), root: "p", zip: false)
        let r = try await c.http(
            .POST, "/build", json: ["nonce": "c0ffee00", "source_data": Data(archive).base64EncodedString(), "source_name": "p.tar.gz"],
            headers: auth(token))
        return try #require(r.json["job_id"] as? String, "\(r.status) \(r.body)")
    }

    @Test func principalsSeeOnlyTheirOwnJobsAndAdminsSeeAll() async throws {
        let (c, pre) = try await Self.clusterWithThreePrincipals()
        defer { c.stop() }
        func auth(_ token: String) -> [(String, String)] { Self.auth(token) }
        func submit(_ token: String) async throws -> String { try await Self.submit(c, as: token) }
        let a = try await submit("alice-token")
        let b = try await submit("bob-token")
        let mine = try await c.http(.GET, "/build/\(a)", headers: auth("alice-token"))
        #expect(mine.status == 200 && mine.json["triggered_by"] as? String == "alice")
        // Bob's job does not exist as far as Alice can tell.
        for (method, path) in [(HTTPMethod.GET, "/build/\(b)"), (.GET, "/build/\(b)/events"), (.GET, "/build/\(b)/result"), (.POST, "/build/\(b)/cancel")] {
            let r = try await c.http(method, path, headers: auth("alice-token"))
            #expect(r.status == 404, "\(method) \(path): \(r.status)")
            #expect(r.body.contains("no job with id '\(b)'"))
        }
        #expect(try await c.http(.GET, "/build/\(b)", headers: auth("bob-token")).status == 200)
        // Listings.
        func ids(_ r: TestCluster.HTTPResult) -> [String] { (r.json["builds"] as? [[String: Any]] ?? []).compactMap { $0["job_id"] as? String } }
        #expect(ids(try await c.http(.GET, "/builds", headers: auth("alice-token"))) == [a])
        #expect(Set(ids(try await c.http(.GET, "/builds", headers: auth("root-token")))) == [a, b])
        #expect(ids(try await c.http(.GET, "/builds?triggered_by=bob", headers: auth("root-token"))) == [b])
        #expect(ids(try await c.http(.GET, "/builds?triggered_by=bob", headers: auth("alice-token"))) == [a], "a user cannot list others")
        #expect(try await c.http(.GET, "/build/\(b)", headers: auth("root-token")).status == 200)
        // Pagination, newest first.
        let a2 = try await submit("alice-token")
        let a3 = try await submit("alice-token")
        let page1 = try await c.http(.GET, "/builds?limit=2", headers: auth("alice-token"))
        #expect(ids(page1) == [a3, a2])
        let cursor = try #require(page1.json["next_cursor"] as? String)
        let page2 = try await c.http(.GET, "/builds?limit=2&cursor=\(cursor)", headers: auth("alice-token"))
        #expect(ids(page2) == [a])
        #expect(ids(try await c.http(.GET, "/builds?status=ready", headers: auth("alice-token"))).isEmpty)
        #expect(try await c.http(.GET, "/builds?status=bogus", headers: auth("alice-token")).status == 400)
        #expect(try await c.http(.GET, "/builds?limit=0", headers: auth("alice-token")).status == 400)
        // Revoking Bob (rewriting the file) takes effect on his very next request.
        try Self.tokensFile([("alice", "user", "alice-token"), ("root", "admin", "root-token")])
            .write(toFile: pre.file("tokens.json"), atomically: true, encoding: .utf8)
        #expect(try await c.http(.GET, "/build/\(b)", headers: auth("bob-token")).status == 401)
        #expect(try await c.http(.GET, "/build/\(a)", headers: auth("alice-token")).status == 200)
        #expect(try await c.http(.GET, "/builds", headers: auth("nobody")).status == 401)
    }

    @Test func anOpenGatewayRefusesToListenBeyondLoopback() async throws {
        let dir = try TemporaryDirectory()
        let p = try await LaunchedProcess(
            BuiltProducts.path("kiln-gateway"),
            [
                "--host", "0.0.0.0", "--port", "0", "--data", dir.file("gw"),
                "--broker", "kiln://127.0.0.1:1",
            ])
        #expect(try await p.waitForExit() != 0)
        #expect(p.output.joined().contains("--insecure-no-auth"), "\(p.output)")
    }
}
