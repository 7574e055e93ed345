import ArgumentParser
import Crypto
import Foundation
import KilnAttestation
import KilnBus

/// `kiln keys nats`: Kiln's accounts for a nats-server bus (#29 item 4). The operator's credential key
/// — the one kiln-pool mints worker logins with — becomes the NATS account's key, so the workers'
/// user JWTs the pool mints chain to an account the servers trust; the gateway, the pool and
/// kiln-fetch get users with their roles' permissions (`BusRoles`). nats-server then enforces, per
/// worker, that it publishes only on its own id's subjects: on NATS the subject names the sender.
struct NATSKeysCommand: ParsableCommand {
    static let configuration = CommandConfiguration(
        commandName: "nats",
        abstract: "Write a nats-server configuration (operator, Kiln's account) and .creds files for the gateway, pool and kiln-fetch.",
        discussion: """
            Include <out>/nats-server.conf in every cluster member's configuration (nats-server -c). Start the gateway, \
            pool and kiln-fetch with KILN_BROKER_CREDS=<out>/<role>.creds, and the pool with --credential-signing-key \
            set to the same key: each worker it launches gets its own NATS user, valid for --credential-ttl.
            """)

    @Option(help: "The operator's credential key (PEM, `kiln keys generate`): the NATS account's key.") var credentialKey: String
    @Option(help: "Directory to write into (created, mode 0700).") var out: String
    @Option(help: "Account name shown by nats-server.") var account = "KILN"

    func run() throws {
        let fm = FileManager.default
        try fm.createDirectory(atPath: out, withIntermediateDirectories: true, attributes: [.posixPermissions: 0o700])
        let accountKey = NATSKey(
            role: .account, privateKey: try Curve25519.Signing.PrivateKey(rawRepresentation: SigningKey(contentsOf: credentialKey).seed))
        // The operator key only signs the account JWT: kept beside it so a re-run keeps the servers' trust root.
        let operatorFile = out + "/operator.nk"
        let operatorKey: NATSKey
        if fm.fileExists(atPath: operatorFile) {
            operatorKey = try NATSKey(seed: String(contentsOfFile: operatorFile, encoding: .utf8))
            guard operatorKey.role == .operator else { throw ValidationError("\(operatorFile) is not an operator seed") }
        } else {
            operatorKey = NATSKey(role: .operator)
            try Self.writeSecret(operatorKey.seed + "\n", to: operatorFile)
        }
        let now = Int64(Date().timeIntervalSince1970)
        let conf = try NATSAccountSetup.serverConfiguration(operatorKey: operatorKey, accountKey: accountKey, accountName: account, now: now)
        try conf.write(toFile: out + "/nats-server.conf", atomically: true, encoding: .utf8)
        for (role, rules) in [("gateway", BusRoles.gateway), ("pool", BusRoles.pool), ("fetch", BusRoles.fetch)] {
            let user = try NATSAccountSetup.user(rules, name: role, accountKey: accountKey, expires: nil, now: now)
            try Self.writeSecret(user.credsText, to: out + "/\(role).creds")
        }
        print("wrote \(out)/nats-server.conf (account \(accountKey.publicKey)) and gateway.creds, pool.creds, fetch.creds")
    }

    static func writeSecret(_ text: String, to path: String) throws {
        // Replaced, never rewritten in place: a reader never sees half a key, and the mode is set before the bytes land.
        try? FileManager.default.removeItem(atPath: path)  // absent the first time; a failure shows in createFile below
        guard FileManager.default.createFile(atPath: path, contents: Data(text.utf8), attributes: [.posixPermissions: 0o600]) else {
            throw ValidationError("cannot write \(path)")
        }
    }
}
