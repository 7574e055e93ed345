import ArgumentParser

@main
struct KilnCommand: AsyncParsableCommand {
    static let configuration = CommandConfiguration(
        commandName: "kiln",
        abstract: "Kiln: submit builds, follow them, fetch results, and verify their attestation offline.",
        subcommands: [VerifyCommand.self, KeysCommand.self, PackCommand.self])
}
