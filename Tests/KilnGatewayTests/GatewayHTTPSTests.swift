import Foundation
import KilnTestSupport
import Testing

/// #12 item 4: the gateway serves HTTPS itself; the CLI verifies its certificate (system roots or a
/// CA file it is given) and refuses one it cannot verify; results download through TLS intact.
@Suite(.serialized) struct GatewayHTTPSTests {
    @Test func theCLIBuildsOverHTTPSTrustingOnlyTheGivenCA() async throws {
        let pre = try TemporaryDirectory(prefix: "kiln-https")
        let pki = try await TestCertificates(directory: pre.path)
        let c = try await TestCluster(gatewayArgs: ["--tls-cert", pki.serverCert, "--tls-key", pki.serverKey])
        defer { c.stop() }
        #expect(c.gateway.process.output.contains { $0.hasPrefix("kiln-gateway listening on https://") })
        try await c.startWorker()
        let src = pre.file("src")
        try Fixtures.write(Fixtures.helloCrate(name: "overtls"), to: src)
        let url = "https://127.0.0.1:\(c.gateway.port)"
        var env = ProcessInfo.processInfo.environment
        env["KILN_GATEWAY"] = url

        // A certificate the client cannot verify: refused, nothing submitted.
        for extra in [[String](), ["--ca-file", pki.rogueCA]] {
            let refused = try await LaunchedProcess(BuiltProducts.path("kiln"), ["submit", src, "--nonce", "c0ffee00"] + extra, environment: env)
            #expect(try await refused.waitForExit(timeout: .seconds(60)) != 0, "\(extra): \(refused.output.suffix(5))")
            #expect(refused.output.joined().lowercased().contains("certificate"), "\(refused.output.suffix(5))")
        }
        // Plain HTTP to the HTTPS port gets no HTTP answer.
        let plain = try RawSocket(port: c.gateway.port)
        try await plain.send(Array("GET /healthz HTTP/1.1\r\nHost: x\r\n\r\n".utf8))
        await #expect(!String(decoding: try plain.readAll(timeout: 3), as: UTF8.self).contains("HTTP/1.1 200"))

        let result = pre.file("result.tar.gz")
        let submit = try await LaunchedProcess(
            BuiltProducts.path("kiln"),
            [
                "submit", src, "--nonce", "c0ffee00", "--follow", "-o", result,
                "--ca-file", pki.caCert,
            ], environment: env)
        #expect(try await submit.waitForExit(timeout: .seconds(180)) == 0, "\(submit.output.suffix(10))")
        let verify = try await LaunchedProcess(BuiltProducts.path("kiln"), ["verify", result, "--nonce", "c0ffee00", "--key", c.keyFile, "--allow-tee-none"])
        #expect(try await verify.waitForExit() == 0, "\(verify.output)")
        // The CA can come from the environment too.
        env["KILN_GATEWAY_CA"] = pki.caCert
        let keys = try await LaunchedProcess(BuiltProducts.path("kiln"), ["keys", "fetch"], environment: env)
        #expect(try await keys.waitForExit(timeout: .seconds(60)) == 0, "\(keys.output)")
    }
}
