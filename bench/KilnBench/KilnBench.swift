import ArgumentParser

@main
struct KilnBench: AsyncParsableCommand {
    static let configuration = CommandConfiguration(
        commandName: "kiln-bench",
        abstract: "Kiln's benchmarks; each case prints one JSON line.",
        subcommands: [BusBench.self, AttestBench.self, FakeWorker.self, SSEClients.self, ScaleBench.self])
}
