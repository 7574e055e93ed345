import Foundation
import KilnTestSupport
import Testing

/// Every input the fuzzers have kept (fuzz/corpus) replays without a crash, as a regression test in
/// ordinary builds (`make fuzz` does the fuzzing itself).
@Suite struct FuzzCorpusTests {
    static let root = URL(fileURLWithPath: #filePath).deletingLastPathComponent().deletingLastPathComponent().deletingLastPathComponent().path

    @Test(arguments: ["FuzzBusFrames", "FuzzGatewayMessages", "FuzzSubmissionBodies"])
    func theCorpusReplaysCleanly(target: String) async throws {
        let corpus = Self.root + "/fuzz/corpus/" + target
        let inputs = try FileManager.default.contentsOfDirectory(atPath: corpus).count
        #expect(inputs >= 5)
        let p = try await LaunchedProcess(BuiltProducts.path(target), [corpus])
        #expect(try await p.waitForExit(timeout: .seconds(120)) == 0, "\(p.output.suffix(20))")
        #expect(p.output.contains { $0.hasPrefix("replayed \(inputs) inputs") }, "\(p.output)")
    }
}
