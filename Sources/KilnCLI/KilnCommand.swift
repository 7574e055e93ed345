import ArgumentParser
import KilnCore

@main
struct KilnCommand: AsyncParsableCommand {
    static let configuration = CommandConfiguration(
        commandName: "kiln",
        abstract: "Kiln: submit builds, follow them, fetch results, and verify their attestation offline.",
        version: KilnVersion.current.description,
        subcommands: [
            SubmitCommand.self, StatusCommand.self, EventsCommand.self, ResultCommand.self, CancelCommand.self, ListCommand.self,
            RetryCommand.self, RebuildCommand.self,
            VerifyCommand.self, KeysCommand.self, PackCommand.self, MeasureCommand.self,
        ])
}
