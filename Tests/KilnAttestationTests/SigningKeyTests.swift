import Foundation
import KilnAttestation
import KilnTestSupport
import Testing

@Suite struct SigningKeyTests {
    @Test func workersStartingTogetherShareOneNewKey() throws {
        // A pool starts several workers at once with the same missing key file: each must end up
        // with the key that is on disk, never a half-written file or a key of its own.
        let dir = try TemporaryDirectory()
        let path = dir.file("farm.pem")
        let keys = try (0..<16).map { _ in try SigningKey.loadOrCreate(at: path) }  // warm-up of the sequential path
        #expect(Set(keys.map(\.publicKey.hex)).count == 1)
        let racePath = dir.file("race.pem")
        let results = ResultsBox()
        DispatchQueue.concurrentPerform(iterations: 32) { _ in
            results.append(Result { try SigningKey.loadOrCreate(at: racePath).publicKey.hex })
        }
        let hexes = try results.values.map { try $0.get() }
        #expect(hexes.count == 32)
        #expect(Set(hexes) == [try SigningKey(contentsOf: racePath).publicKey.hex])
        #expect(try FileManager.default.contentsOfDirectory(atPath: dir.path).sorted() == ["farm.pem", "race.pem"], "no temporary files left")
    }
}

final class ResultsBox: @unchecked Sendable {
    private let lock = NSLock()
    private var items: [Result<String, any Error>] = []
    var values: [Result<String, any Error>] { lock.withLock { items } }
    func append(_ r: Result<String, any Error>) { lock.withLock { items.append(r) } }
}
