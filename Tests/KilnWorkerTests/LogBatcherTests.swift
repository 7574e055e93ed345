import Foundation
import KilnTestSupport
import Testing

@testable import KilnWorker

/// The build log: every line in the file up to its cap (two reader threads at once, as stdout and
/// stderr are read), the events capped apart, and a note when lines were left out of them.
@Suite struct LogBatcherTests {
    @Test func twoStreamsAtOnceKeepEveryLineUpToTheFileCap() async throws {
        let dir = try TemporaryDirectory()
        let log = LogBatcher(path: dir.file("build.log"), maxShippedBytes: 1 << 20, maxFileBytes: 1 << 20)
        try await offThePool {
            let group = DispatchGroup()
            for stream in ["stdout", "stderr"] {
                group.enter()
                Thread {
                    for i in 0..<5_000 { log.append(stream, "\(stream) line \(i)") }
                    group.leave()
                }.start()
            }
            group.wait()
        }
        let digest = try log.finish()
        let lines = try String(contentsOfFile: dir.file("build.log"), encoding: .utf8).split(separator: "\n")
        #expect(lines.count == 10_000 && Set(lines).count == 10_000, "every line once, none torn")
        #expect(lines.filter { $0.hasPrefix("stdout") }.map { Int($0.split(separator: " ").last!)! } == Array(0..<5_000), "one stream's order kept")
        #expect(digest.size == Int64(lines.reduce(0) { $0 + $1.utf8.count + 1 }))
    }

    @Test func theFileAndTheEventsAreCappedApart() throws {
        let dir = try TemporaryDirectory()
        let log = LogBatcher(path: dir.file("build.log"), maxShippedBytes: 100, maxFileBytes: 1_000)
        for i in 0..<1_000 { log.append("stderr", "line \(i)") }
        #expect(try log.finish().size <= 1_000)
        let shipped = log.drain().flatMap(\.lines)
        #expect(shipped.last?.contains("log limit of 100 bytes reached") == true)
        #expect(shipped.dropLast().reduce(0) { $0 + $1.utf8.count + 1 } <= 100)
        #expect(log.dropped.lines > 900)
    }
}
