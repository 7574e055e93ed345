import Foundation
@testable import KilnWorker
import KilnTestSupport
import NIOConcurrencyHelpers
import Testing

@Suite struct SandboxTests {
    func run(_ script: String, limits: (inout WorkerConfiguration.Limits) -> Void = { _ in }) async throws -> (Sandbox.Outcome, [String]) {
        let dir = try TemporaryDirectory(prefix: "kiln-sandbox")
        try FileManager.default.createDirectory(atPath: dir.file("src"), withIntermediateDirectories: true)
        try FileManager.default.createDirectory(atPath: dir.file("out"), withIntermediateDirectories: true)
        var l = WorkerConfiguration.Limits()
        l.buildTimeout = .seconds(30)
        limits(&l)
        let lines = NIOLockedValueBox<[String]>([])
        let outcome = try await Sandbox(limits: l).run(name: "t\(UInt32.random(in: 0...UInt32.max))", command: ["/bin/sh", "-c", script],
                                                       environment: ["PATH": "/usr/bin:/bin"],
                                                       mounts: .init(source: dir.file("src"), output: dir.file("out")), cancel: nil) { _, line in
            lines.withLockedValue { $0.append(line) }
        }
        return (outcome, lines.withLockedValue { $0 })
    }

    @Test func memoryLimitIsReported() async throws {
        let (o, lines) = try await run("python3 -c 'x = bytearray(600 * 1024 * 1024)'") { $0.memoryBytes = 128 << 20 }
        #expect(!o.process.succeeded)
        #expect(o.hitMemoryLimit, "\(o.process.description) \(lines)")
    }

    @Test func processLimitIsReported() async throws {
        let (o, _) = try await run("for i in $(seq 200); do sleep 30 & done; wait") { $0.maxProcesses = 20 }
        #expect(o.hitProcessLimit)
    }

    @Test func timeoutKillsTheTree() async throws {
        let start = ContinuousClock.now
        let (o, _) = try await run("sleep 300 & sleep 300 & wait") { $0.buildTimeout = .milliseconds(500) }
        #expect(o.process.timedOut)
        #expect(ContinuousClock.now - start < .seconds(60), "the 300 s sleeps were killed, not waited for")
    }

    @Test func argumentsHideTheHost() {
        let s = Sandbox(limits: .init())
        let args = s.arguments(command: ["true"], environment: ["A": "1"], mounts: .init(source: "/s", output: "/o"))
        #expect(args.contains("--unshare-all"))
        #expect(args.contains("--clearenv"))
        #expect(!args.contains("/root"))
        #expect(!args.contains { $0 == "/" })
    }
}
