import Crypto
import Foundation
import KilnArchive
import KilnTestSupport
import Testing

@testable import KilnCoordination
@testable import KilnGateway

/// Result assembly off the coordinator's actor (#16 item 1): chunks in any order and twice, the
/// digest checked before the file is moved into place, storage failures as storage errors.
struct ResultAssemblerTests {
    @Test func chunksInAnyOrderAndTwiceAssembleTheAnnouncedResult() async throws {
        let dir = try TemporaryDirectory(prefix: "kiln-assembler")
        let assembler = ResultAssembler(files: try ResultFiles(root: dir.path))
        let bytes = (0..<300_000).map { UInt8(truncatingIfNeeded: $0 &* 7) }
        let sha = FileDigest.of(bytes: bytes).sha256
        let chunk = 100_000
        for index in [2, 0, 1, 0] {
            try await assembler.write(job: "j1", offset: Int64(index * chunk), bytes: Array(bytes[(index * chunk)..<((index + 1) * chunk)]))
        }
        #expect(try await assembler.finish(job: "j1", sha256: sha, size: Int64(bytes.count)))
        #expect(FileManager.default.contents(atPath: dir.path + "/results/\(sha).tar.gz") == Data(bytes))
        #expect(!FileManager.default.fileExists(atPath: dir.path + "/partial/j1.part"))
    }

    @Test func aResultThatDoesNotMatchItsDigestIsDroppedNotKept() async throws {
        let dir = try TemporaryDirectory(prefix: "kiln-assembler")
        let assembler = ResultAssembler(files: try ResultFiles(root: dir.path))
        try await assembler.write(job: "j2", offset: 0, bytes: Array("tampered".utf8))
        let claimed = FileDigest.of(bytes: Array("original".utf8))
        #expect(try await assembler.finish(job: "j2", sha256: claimed.sha256, size: claimed.size) == false)
        #expect(!FileManager.default.fileExists(atPath: dir.path + "/partial/j2.part"))
        #expect(!FileManager.default.fileExists(atPath: dir.path + "/results/\(claimed.sha256).tar.gz"))
    }

    @Test func aDiskThatRefusesIsAStorageErrorNamingTheFile() async throws {
        let dir = try TemporaryDirectory(prefix: "kiln-assembler")
        let files = try ResultFiles(root: dir.path)
        try FileManager.default.removeItem(atPath: dir.path + "/partial")
        do {
            try await ResultAssembler(files: files).write(job: "j3", offset: 0, bytes: [1])
            Issue.record("the write succeeded without its directory")
        } catch {
            #expect(error.step == .write && error.description.contains("/partial/j3.part") && error.description.contains("No such file"), "\(error)")
        }
    }
}
