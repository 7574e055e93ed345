import Foundation

/// A kiln-fetch process on loopback: the farm's fetch service that every worker of a test farm gets
/// crates and repositories through. By default it serves only the tests' loopback hosts (the local
/// git server and registry), and takes unstamped requests (most test brokers do not authenticate).
public final class FetchServiceProcess: Sendable {
    public let process: LaunchedProcess
    public let state: String
    public let monitorPort: Int

    /// `allowLoopback: false` leaves the host policy as an operator would (internal addresses refused).
    public init(
        broker: String, state: String, registry: String? = nil, arguments: [String] = [], unstamped: Bool = true, allowLoopback: Bool = true,
        environment: [String: String]? = nil
    ) async throws {
        self.state = state
        process = try await LaunchedProcess(
            BuiltProducts.path("kiln-fetch"),
            ["--broker", broker, "--state", state, "--monitor-port", "0"]
                + (allowLoopback ? ["--allow-source-host", "127.0.0.1", "--only-allowed-source-hosts"] : [])
                + (unstamped ? ["--allow-unstamped"] : []) + (registry.map { ["--cargo-registry", $0] } ?? []) + arguments,
            environment: environment)
        monitorPort = Int(try await process.waitForLine(prefix: "kiln-fetch monitor on http://127.0.0.1:")) ?? 0
        _ = try await process.waitForLine(prefix: "kiln-fetch ready")
    }

    /// The crate cache's directory (content-addressed: `<sha256>.crate`).
    public var cacheDirectory: String { state + "/crates" }

    /// A counter or gauge from its /metrics (nil: not exported yet).
    public func metric(_ name: String) async -> Double? {
        guard let body = try? await HTTPGet.get(port: monitorPort, path: "/metrics").body else { return nil }  // not up: no value
        return body.split(separator: "\n").first { $0.hasPrefix(name + " ") }.flatMap { Double($0.split(separator: " ").last ?? "") }
    }

    public func stop() { process.stop() }
}
