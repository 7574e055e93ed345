import Foundation
import KilnTestSupport
import Testing

/// #11 item 3: a whole farm whose bus is TLS with client certificates (mTLS): the gateway and the
/// worker (and the fetch service) each log in as the user their certificate names; the build completes
/// and verifies.
@Suite(.serialized) struct FarmOverTLSTests {
    @Test func aBuildCompletesOverMutualTLS() async throws {
        let pre = try TemporaryDirectory(prefix: "kiln-tls")
        let pki = try await TestCertificates(directory: pre.path, clients: ["gateway", "worker-1", "fetch"])
        try #"""
        {"users": [
          {"user": "gateway", "permissions": {}},
          {"user": "fetch", "permissions": {"publish": {"deny": [">"]}, "subscribe": {"allow": ["kiln.worker.*.fetch.*"]}, "allow_responses": true}},
          {"user": "worker-1", "permissions": {"publish": {"allow": ["kiln.workers.ready.*", "kiln.build.*.events.*", "kiln.build.*.result.*", "kiln.build.*.source.*"]},
                                               "subscribe": {"allow": ["kiln.build.request workers", "kiln.worker.*.request", "_INBOX.>", "kiln.build.*.control"]},
                                               "allow_responses": true}}
        ]}
        """#.write(toFile: pre.file("users.json"), atomically: true, encoding: .utf8)
        func env(_ who: String) -> [String: String] {
            var e = ProcessInfo.processInfo.environment
            e["KILN_BROKER_CA"] = pki.caCert
            e["KILN_BROKER_CERT"] = pki.clientCert(who)
            e["KILN_BROKER_KEY"] = pki.clientKey(who)
            return e
        }
        let c = try await TestCluster(
            brokerArgs: [
                "--tls-cert", pki.serverCert, "--tls-key", pki.serverKey, "--tls-client-ca", pki.caCert,
                "--users", pre.file("users.json"),
            ],
            brokerURLForGateway: { "kilns://127.0.0.1:\($0)" }, gatewayEnvironment: env("gateway"))
        defer { c.stop() }
        try await c.startFetchService(brokerURL: "kilns://127.0.0.1:\(c.broker.port)", environment: env("fetch"))
        try await c.startWorker(["--broker", "kilns://127.0.0.1:\(c.broker.port)"], environment: env("worker-1"))
        let id = try await c.submit(Fixtures.helloCrate())
        let done = try await c.waitForStatus(id, ["ready", "error", "cancelled"], timeout: .seconds(120))
        #expect(done["status"] as? String == "ready", "\(done)")
        let file = c.dir.file("tls-result.tar.gz")
        #expect(try await c.download("/build/\(id)/result", to: file).status == 200)
        let v = try await LaunchedProcess(BuiltProducts.path("kiln"), ["verify", file, "--nonce", "c0ffee00", "--key", c.keyFile, "--allow-tee-none"])
        #expect(try await v.waitForExit() == 0, "\(v.output)")
        // Without a certificate the worker cannot join.
        let stranger = try await LaunchedProcess(
            BuiltProducts.path("kiln-worker"),
            [
                "--broker", "kilns://127.0.0.1:\(c.broker.port)", "--scratch", c.dir.file("s2"),
                "--key", c.keyFile, "--idle-timeout", "5",
            ],
            environment: {
                var e = env("worker-1")
                e["KILN_BROKER_CERT"] = nil
                e["KILN_BROKER_KEY"] = nil
                return e
            }())
        #expect(try await stranger.waitForExit(timeout: .seconds(30)) != 0)
    }
}
