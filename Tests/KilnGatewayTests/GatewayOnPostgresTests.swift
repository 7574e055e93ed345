import Foundation
import KilnTestSupport
import Testing

/// #15 item 2: a gateway keeping its jobs in a real PostgreSQL; restarted, it finds them there.
@Suite(.serialized) struct GatewayOnPostgresTests {
    @Test func aBuildIsRecordedInPostgresAndSurvivesAGatewayRestart() async throws {
        let database = try await PostgresProcess()
        defer { database.stop() }
        let c = try await TestCluster(gatewayArgs: ["--database", database.url])
        defer { c.stop() }
        let id = try await c.submit(Fixtures.helloCrate(), nonce: "0badc0de")
        try await c.startWorker()
        let status = try await c.waitForStatus(id, ["ready", "error"])
        #expect(status["status"] as? String == "ready", "\(status)")
        let events = try await c.http(.GET, "/build/\(id)/events")
        #expect(events.body.contains("event: done"))
        try await c.restartGateway()
        let again = try await c.status(id)
        #expect(again["status"] as? String == "ready" && again["artifact_ids"] as? [Any] != nil, "\(again)")
        let file = c.dir.file("pg.tar.gz")
        #expect(try await c.download("/build/\(id)/result", to: file).status == 200)
        let v = try await LaunchedProcess(BuiltProducts.path("kiln"), ["verify", file, "--nonce", "0badc0de", "--key", c.keyFile, "--allow-tee-none"])
        #expect(try await v.waitForExit() == 0, "\(v.output)")
        let listed = try await c.http(.GET, "/builds")
        #expect(listed.body.contains(id))
    }

    /// The scale-out limits are range-checked at start: a zero or absurd database deadline or gateway
    /// lease is refused with a message naming the flag.
    @Test func outOfRangeScaleOutLimitsAreRefusedAtStart() async throws {
        let dir = try TemporaryDirectory()
        for (flag, value) in [("--database-timeout", "0"), ("--database-timeout", "601"), ("--gateway-lease", "1"), ("--gateway-lease", "3601")] {
            let p = try await LaunchedProcess(
                BuiltProducts.path("kiln-gateway"),
                ["--port", "0", "--data", dir.file("gw"), "--broker", "kiln://127.0.0.1:1", flag, value])
            #expect(try await p.waitForExit() != 0)
            #expect(p.output.joined().contains(flag), "\(flag) \(value): \(p.output)")
        }
    }
}
