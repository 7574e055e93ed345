import ArgumentParser
import Foundation
import KilnAttestation

struct KeysCommand: AsyncParsableCommand {
    static let configuration = CommandConfiguration(
        commandName: "keys",
        abstract: "The gateway's public keys, or generate / show a local key.",
        subcommands: [GatewayKeysCommand.self, Generate.self, Show.self, NATSKeysCommand.self], defaultSubcommand: GatewayKeysCommand.self)

    struct Generate: ParsableCommand {
        static let configuration = CommandConfiguration(abstract: "Write a new Ed25519 signing key (PEM, mode 0600).")
        @Argument(help: "Where to write the private key.") var path: String
        @Flag(help: "Overwrite an existing file.") var force = false

        func run() throws {
            if FileManager.default.fileExists(atPath: path), !force { throw ValidationError("\(path) exists; pass --force to replace it") }
            let key = SigningKey()
            try key.write(to: path)
            print("wrote \(path); keyid \(key.publicKey.keyID)")
            print(key.publicKey.pemRepresentation, terminator: "")
        }
    }

    struct Show: ParsableCommand {
        static let configuration = CommandConfiguration(abstract: "Print the public key of a key file (PEM, hex and keyid).")
        @Argument(help: "A private or public key file.") var path: String
        @Flag(help: "Print the /keys JSON document.") var json = false

        func run() throws {
            let key = try PublicKey(contentsOf: path)
            if json {
                print(String(decoding: try CanonicalJSON.encode(KeySet([key])), as: UTF8.self), terminator: "")
            } else {
                print("keyid \(key.keyID)\nhex   \(key.hex)")
                print(key.pemRepresentation, terminator: "")
            }
        }
    }
}
