import Foundation

/// A real nats-server (Debian's package) on a loopback port it picks, optionally one member of a
/// cluster whose route port it also picks (#15).
public final class NATSServerProcess: Sendable {
    public static let executable = "/usr/sbin/nats-server"
    public let process: LaunchedProcess
    public let port: Int
    /// The cluster route port (nil unless started with `cluster:`).
    public let routePort: Int?

    public var url: String { "nats://127.0.0.1:\(port)" }

    /// - Parameters:
    ///   - cluster: a cluster name to join, with `routes` (other members' route ports) to connect to.
    public init(cluster: String? = nil, routes: [Int] = [], arguments: [String] = []) async throws {
        var args = ["-a", "127.0.0.1", "-p", "-1", "--no_advertise"]
        if let cluster {
            args += ["--cluster_name", cluster, "--cluster", "nats://127.0.0.1:-1"]
            if !routes.isEmpty { args += ["--routes", routes.map { "nats://127.0.0.1:\($0)" }.joined(separator: ",")] }
        }
        let process = try await LaunchedProcess(Self.executable, args + arguments)
        self.process = process
        func port(after marker: String) async throws -> Int {
            let line = try await process.waitForLine(what: marker) { $0.contains(marker) }
            guard let port = line.split(separator: ":").last.flatMap({ Int($0.trimmingCharacters(in: .whitespaces)) }) else {
                throw LaunchError("nats-server printed no port in '\(line)'")
            }
            return port
        }
        let clientPort = try await port(after: "Listening for client connections on ")
        let routePort = cluster == nil ? nil : try await port(after: "Listening for route connections on ")
        self.port = clientPort
        self.routePort = routePort
    }

    public func stop() { process.stop() }
}
