import AsyncHTTPClient
import Foundation
import KilnTestSupport
import NIOCore
import Testing

/// `cluster/scale-out.sh` (#15 item 4) as an operator starts it: three clustered nats-servers, its own
/// PostgreSQL, two gateways and a pool. A build submitted with `kiln submit` through gateway A is
/// listed, downloaded and verified through gateway B, and the script stops everything it started.
@Suite(.serialized) struct ScaleOutScriptTests {
    @Test func aBuildThroughOneGatewayIsServedByTheOther() async throws {
        let dir = try TemporaryDirectory(prefix: "kiln-scale-script")
        chmod(dir.path, 0o755)  // PostgreSQL runs as its own user inside
        let ports = try (0..<9).map { _ in try FreePort.pick() }
        var env = ProcessInfo.processInfo.environment
        env["BIN"] = BuiltProducts.directory
        env["KILN_STATE"] = dir.file("state")
        env["KILN_NATS_PORTS"] = ports[0..<3].map(String.init).joined(separator: " ")
        env["KILN_NATS_ROUTE_PORTS"] = ports[3..<6].map(String.init).joined(separator: " ")
        env["KILN_GATEWAY_PORTS"] = "\(ports[6]) \(ports[7])"
        env["KILN_POOL_MONITOR_PORT"] = String(ports[8])
        env["KILN_POOL_IDLE"] = "1"
        let farm = try await LocalFarmTests.launchScript("cluster/scale-out.sh", environment: env)
        defer { farm.terminate(grace: .seconds(15)) }
        _ = try await farm.waitForLine(prefix: "scale-out farm ready", timeout: .seconds(90))
        let (a, b) = ("http://127.0.0.1:\(ports[6])", "http://127.0.0.1:\(ports[7])")
        let src = dir.file("src")
        try Fixtures.write(Fixtures.helloCrate(name: "scaled"), to: src)
        let nonce = "0123456789abcdef0123456789abcdef"
        let submit = try await LaunchedProcess(
            BuiltProducts.path("kiln"), ["submit", src, "--gateway", a, "--nonce", nonce, "--follow", "-o", dir.file("via-a.tar.gz")])
        #expect(try await submit.waitForExit(timeout: .seconds(180)) == 0, "\(submit.output.suffix(10))")
        // Gateway B knows the job and serves its result.
        let list = try await HTTPClient.shared.execute(HTTPClientRequest(url: b + "/builds"), timeout: .seconds(30))
        let page = try JSONSerialization.jsonObject(with: Data(String(buffer: try await list.body.collect(upTo: 1 << 20)).utf8)) as? [String: Any]
        let id = try #require((page?["builds"] as? [[String: Any]])?.first?["job_id"] as? String)
        let result = try await HTTPClient.shared.execute(HTTPClientRequest(url: b + "/build/\(id)/result"), timeout: .seconds(30))
        #expect(result.status == .ok)
        try Data(try await result.body.collect(upTo: 64 << 20).readableBytesView).write(to: URL(fileURLWithPath: dir.file("via-b.tar.gz")))
        for file in ["via-a.tar.gz", "via-b.tar.gz"] {
            let v = try await LaunchedProcess(
                BuiltProducts.path("kiln"), ["verify", dir.file(file), "--nonce", nonce, "--key", dir.file("state/keys/farm.pub.pem"), "--allow-tee-none"])
            #expect(try await v.waitForExit() == 0, "\(file): \(v.output)")
        }
        // One nats-server killed: the script says so and keeps the farm running (#28), and the next
        // build goes through the other gateway.
        // Anchored at the start of the command line: the shell running pgrep carries the pattern too.
        let natsPID = try await Command.run("/usr/bin/pgrep", ["-f", "^[^ ]*nats-server -a 127.0.0.1 -p \(ports[0]) "])
        let victim = try #require(Int32(natsPID.trimmingCharacters(in: .whitespacesAndNewlines)), "the first nats-server's pid")
        kill(victim, SIGKILL)
        _ = try await farm.waitForLine(prefix: "a member exited", timeout: .seconds(90))
        #expect(farm.isRunning, "the script stopped the whole farm when one member died")
        let again = try await LaunchedProcess(
            BuiltProducts.path("kiln"), ["submit", src, "--gateway", b, "--nonce", nonce, "--follow", "-o", dir.file("after-kill.tar.gz")])
        #expect(try await again.waitForExit(timeout: .seconds(240)) == 0, "\(again.output.suffix(10))")
        // Stopped, it leaves nothing running (the postmaster included).
        farm.terminate(grace: .seconds(15))
        let pid = try? String(contentsOfFile: dir.file("state/postgres/data/postmaster.pid"), encoding: .utf8).split(separator: "\n").first
        let stopped = await eventually(within: .seconds(60)) { pid.flatMap { Int32($0) }.map { kill($0, 0) != 0 } ?? true }
        #expect(stopped, "the postmaster outlived the script")
    }
}
