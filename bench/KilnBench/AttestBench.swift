import ArgumentParser

struct AttestBench: AsyncParsableCommand {
    static let configuration = CommandConfiguration(commandName: "attest")
    func run() async throws { throw ValidationError("not built yet") }
}
