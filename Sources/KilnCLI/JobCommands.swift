import ArgumentParser
import Foundation
import KilnAttestation

struct StatusCommand: AsyncParsableCommand {
    static let configuration = CommandConfiguration(commandName: "status", abstract: "Show a job's status (JSON).")
    @Argument var id: String
    @OptionGroup var gateway: GatewayOptions

    func run() async throws {
        let doc = try await gateway.client.send(.GET, "/build/\(id)")
        let data = try JSONSerialization.data(withJSONObject: doc, options: [.prettyPrinted, .sortedKeys, .withoutEscapingSlashes])
        print(String(decoding: data, as: UTF8.self))
    }
}

struct EventsCommand: AsyncParsableCommand {
    static let configuration = CommandConfiguration(commandName: "events", abstract: "Follow a job's events until it ends.")
    @Argument var id: String
    @OptionGroup var gateway: GatewayOptions

    func run() async throws {
        let terminal = try await EventPrinter(client: try gateway.client).follow(id)
        if terminal != "done" { throw ExitCode(1) }
    }
}

struct ResultCommand: AsyncParsableCommand {
    static let configuration = CommandConfiguration(commandName: "result", abstract: "Download a job's result tarball.")
    @Argument var id: String
    @Option(name: .shortAndLong, help: "Output file.") var output: String
    @OptionGroup var gateway: GatewayOptions

    func run() async throws {
        let size = try await gateway.client.download(id, to: output)
        print("wrote \(output) (\(size) bytes)")
    }
}

struct CancelCommand: AsyncParsableCommand {
    static let configuration = CommandConfiguration(commandName: "cancel", abstract: "Cancel a waiting or building job.")
    @Argument var id: String
    @OptionGroup var gateway: GatewayOptions

    func run() async throws {
        let doc = try await gateway.client.send(.POST, "/build/\(id)/cancel")
        print("job \(id): \(doc["status"] as? String ?? "?") (cancel requested)")
    }
}

struct GatewayKeysCommand: AsyncParsableCommand {
    static let configuration = CommandConfiguration(commandName: "fetch", abstract: "Print the public keys the gateway serves at /keys.")
    @OptionGroup var gateway: GatewayOptions

    func run() async throws {
        let client = try gateway.client
        let keys = try await GatewayKeys.fetch(client.base, http: client.http)
        for k in keys { print("keyid \(k.keyID)\n\(k.pemRepresentation)") }
    }
}
