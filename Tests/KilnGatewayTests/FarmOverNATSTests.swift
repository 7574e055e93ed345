import Foundation
import KilnTestSupport
import Testing

/// #15 item 1: the whole farm on a real nats-server cluster instead of kiln-broker — the gateway on one
/// member, workers on another, so every dispatch, event, result chunk and source chunk crosses a route.
@Suite(.serialized) struct FarmOverNATSTests {
    @Test func aBuildRunsAcrossAClusterWithChunkedSourcesAndOutlivesAMember() async throws {
        let first = try await NATSServerProcess(cluster: "kiln")
        let second = try await NATSServerProcess(cluster: "kiln", routes: [try #require(first.routePort)])
        defer {
            first.stop()
            second.stop()
        }
        let c = try await TestCluster(brokerURLForGateway: { _ in "\(first.url),\(second.url)" })
        defer { c.stop() }
        c.workerBrokerURL = "\(second.url),\(first.url)"
        let id = try await c.submit(Fixtures.helloCrate(), nonce: "0badc0de")
        try await c.startWorker()
        let status = try await c.waitForStatus(id, ["ready", "error"])
        #expect(status["status"] as? String == "ready", "\(status)")
        let file = c.dir.file("nats.tar.gz")
        #expect(try await c.download("/build/\(id)/result", to: file).status == 200)
        let v = try await LaunchedProcess(BuiltProducts.path("kiln"), ["verify", file, "--nonce", "0badc0de", "--key", c.keyFile, "--allow-tee-none"])
        #expect(try await v.waitForExit() == 0, "\(v.output)")
        // A large upload travels as source chunks (worker → gateway requests over the cluster): about
        // 1.5 MB of random base36 compresses to more than the ~770 KB a NATS frame can carry inline.
        let big = Fixtures.helloCrate(message: String(repeating: "kiln ", count: 1)).merging(
            ["padding.txt": (0..<160_000).map { _ in String(UInt64.random(in: 0...UInt64.max), radix: 36) }.joined(separator: "\n")]) { a, _ in a }
        #expect(try await Fixtures.archive(big, root: "proj", zip: false).count > 900_000, "too small to travel inline over NATS")
        let large = try await c.submit(big)
        try await c.startWorker()
        #expect(try await c.waitForStatus(large, ["ready", "error"])["status"] as? String == "ready")
        // The gateway's member dies: it carries on through the other one, and so does the next build.
        first.stop()
        _ = try await first.process.waitForExit(timeout: .seconds(10))
        let after = try await c.submit(Fixtures.helloCrate(message: "after the member died"))
        try await c.startWorker()
        let afterStatus = try await c.waitForStatus(after, ["ready", "error"])
        #expect(afterStatus["status"] as? String == "ready", "\(afterStatus)")
    }
}
