import ArgumentParser
import Foundation
import KilnArchive
import KilnAttestation

/// Hashing + manifest + provenance + signing + packaging of an artifacts directory into a result
/// tarball, the worker's attest/package step (issue #3 benchmark).
struct AttestBench: AsyncParsableCommand {
    static let configuration = CommandConfiguration(commandName: "attest")

    @Option(help: "Artifacts directory.") var dir: String
    @Option(help: "Output tarball.") var output: String
    @Option var runs = 3

    func run() async throws {
        let key = SigningKey()
        let nonce = "00112233445566778899aabbccddeeff"
        var bytes: Int64 = 0
        for rel in try TarballWriter.sortedEntries(of: dir) {
            if let size = try FileManager.default.attributesOfItem(atPath: dir + "/" + rel)[.size] as? Int,
                (try FileManager.default.attributesOfItem(atPath: dir + "/" + rel)[.type] as? FileAttributeType) == .typeRegular
            {
                bytes += Int64(size)
            }
        }
        var times: [Double] = []
        for _ in 0..<runs {
            let start = ContinuousClock.now
            let inputs = ResultBuilder.Inputs(
                jobID: "bench", nonce: nonce, buildType: BuildType.cargo,
                externalParameters: .init(source: ResourceDescriptor(name: "bench"), nonce: nonce),
                internalParameters: [:], resolvedDependencies: [], builderID: "bench", startedOn: Date(), finishedOn: Date(),
                manifestInputs: .init(source: "bench", nonce: nonce), sourceDateEpoch: 0)
            _ = try ResultBuilder(key: key, evidenceProvider: NoTEEEvidenceProvider())
                .build(artifactsDirectory: dir, buildConfig: [:], inputs: inputs, output: output)
            times.append((ContinuousClock.now - start).seconds)
        }
        times.sort()
        let median = times[times.count / 2]
        print(
            String(
                format: "{\"case\":\"attest+package\",\"tool\":\"kiln\",\"bytes\":%lld,\"seconds\":%.3f,\"mb_per_s\":%.1f}",
                bytes, median, Double(bytes) / median / 1e6))
    }
}
