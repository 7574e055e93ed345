import Foundation
import KilnArchive
import KilnMessages
import KilnTestSupport
import Testing

/// #13 item 6: a flake's inputs are fetched in the fetch phase (from a git server on loopback the
/// worker is allowed to reach), put into the store, checked against flake.lock, and the build runs offline.
@Suite(.serialized) struct FlakeInputTests {
    static let nix = "/usr/bin/nix"
    static let features = ["--extra-experimental-features", "nix-command flakes"]

    /// A flake whose output reads a file of its input `dep`, locked against the git server.
    static func lockedFlake(_ git: GitFixture, dir: TemporaryDirectory) async throws -> [String: String] {
        let flake = """
            {
              inputs.dep = { url = "\(git.url("dep"))?ref=main"; flake = false; };
              outputs = { self, dep }: {
                packages.x86_64-linux.default = derivation {
                  name = "kiln-flake-input"; system = "x86_64-linux"; builder = "/bin/sh";
                  args = [ "-c" "read line < ${dep}/msg.txt; echo $line > $out" ];
                };
              };
            }

            """
        let app = dir.file("app")
        try Fixtures.write(["flake.nix": flake], to: app)
        try await Command.run("/usr/bin/git", ["init", "-q", app])
        try await Command.run("/usr/bin/git", ["-C", app, "add", "flake.nix"])
        try await Command.run(nix, features + ["flake", "lock", app], environment: ["PATH": "/usr/bin:/bin", "HOME": dir.path, "NIX_REMOTE": "daemon"])
        let lock = try String(contentsOfFile: app + "/flake.lock", encoding: .utf8)
        return ["flake.nix": flake, "flake.lock": lock]
    }

    /// Content no earlier run has put into the store.
    static func uniqueMessage() -> String { "hello from an input \(UUID().uuidString)" }

    /// Locking put the input into the store: remove it, so the build must fetch it.
    static func removeFromStore(_ lock: String) async throws {
        let object = try JSONSerialization.jsonObject(with: Data(lock.utf8)) as? [String: Any]
        let narHash = try #require(((object?["nodes"] as? [String: Any])?["dep"] as? [String: Any]).flatMap { ($0["locked"] as? [String: Any])?["narHash"] as? String })
        let env = ["PATH": "/usr/bin:/bin", "NIX_REMOTE": "daemon"]
        let base32 = try await Command.run(nix, ["--extra-experimental-features", "nix-command", "hash", "to-base32", narHash], environment: env)
        let path = try await Command.run(
            "/usr/bin/nix-store", ["--print-fixed-path", "--recursive", "sha256", base32.trimmingCharacters(in: .whitespacesAndNewlines), "source"], environment: env)
        // Each test's input has content of its own, so nothing built before refers to it.
        try await Command.run("/usr/bin/nix-store", ["--delete", path.trimmingCharacters(in: .whitespacesAndNewlines)], environment: env)
    }

    static func build(_ files: [String: String], broker: BrokerProcess) async throws -> (TestDispatcher, BuildEvent, [UInt8]?, TemporaryDirectory) {
        let archive = try await Fixtures.archive(files, root: "flakeapp", zip: false)
        let (d, _, terminal, dir) = try await runBuild(
            { job in BuildRequest(jobID: job, nonce: testNonce, sourceData: Data(archive).base64EncodedString(), sourceName: "flake.tar.gz") },
            broker: broker)
        var output: [UInt8]?
        if terminal.type == .done {
            let unpacked = dir.file("u")
            try FileManager.default.createDirectory(atPath: unpacked, withIntermediateDirectories: true)
            _ = try ArchiveExtractor().extract(archivePath: try d.resultFile(), into: unpacked)
            output = FileManager.default.contents(atPath: unpacked + "/artifacts/result").map(Array.init)
        }
        return (d, terminal, output, dir)
    }

    @Test func inputsAreFetchedIntoTheStoreThenTheBuildRunsOffline() async throws {
        let git = try await GitFixture()
        defer { git.stop() }
        let message = Self.uniqueMessage()
        try await git.createRepository("dep", files: ["msg.txt": message + "\n"])
        let dir = try TemporaryDirectory(prefix: "kiln-flake")
        let files = try await Self.lockedFlake(git, dir: dir)
        try await Self.removeFromStore(files["flake.lock"]!)
        let broker = try await BrokerProcess()
        defer { broker.stop() }

        let (fetched, end, output, _) = try await Self.build(files, broker: broker)
        #expect(end.type == .done, "\(end.message ?? "") \(fetched.logLines.suffix(15))")
        #expect(output.map { String(decoding: $0, as: UTF8.self) } == message + "\n")
        #expect(fetched.logLines.contains { $0.contains("flake inputs: 1, 0 already in the store, 1 fetched") }, "\(fetched.logLines.suffix(15))")
        let phases = fetched.events.filter { $0.type == .phase }.compactMap(\.name)
        #expect(phases.contains("fetch"))
        #expect(end.cacheSummary?.misses == 1)

        // Now in the store: nothing to fetch.
        let (again, againEnd, _, _) = try await Self.build(files, broker: broker)
        #expect(againEnd.type == .done)
        #expect(again.logLines.contains { $0.contains("1 already in the store, 0 fetched") }, "\(again.logLines.suffix(15))")
    }

    @Test func anInputThatDoesNotMatchFlakeLockIsRefused() async throws {
        let git = try await GitFixture()
        defer { git.stop() }
        try await git.createRepository("dep", files: ["msg.txt": Self.uniqueMessage() + "\n"])
        let dir = try TemporaryDirectory(prefix: "kiln-flake")
        var files = try await Self.lockedFlake(git, dir: dir)
        // A lock that pins another content for the same commit (a narHash nobody's tree has).
        let lock = files["flake.lock"]!
        let real = try #require(lock.range(of: #"sha256-[A-Za-z0-9+/=]{44}"#, options: .regularExpression))
        files["flake.lock"] = lock.replacingCharacters(in: real, with: "sha256-" + Data(repeating: 7, count: 32).base64EncodedString())
        let broker = try await BrokerProcess()
        defer { broker.stop() }
        let (_, end, _, _) = try await Self.build(files, broker: broker)
        #expect(end.type == .failed && end.failurePhase == "fetch", "\(end.message ?? "")")
        #expect(end.message?.contains("does not match flake.lock's narHash") == true, "\(end.message ?? "")")
    }

    @Test func aHostTheFarmDoesNotAllowIsNotFetched() async throws {
        // The fetch service is not allowed 127.0.0.1 here: the input's host is refused like a repository's.
        let git = try await GitFixture()
        defer { git.stop() }
        try await git.createRepository("dep", files: ["msg.txt": Self.uniqueMessage() + "\n"])
        let dir = try TemporaryDirectory(prefix: "kiln-flake")
        let files = try await Self.lockedFlake(git, dir: dir)
        try await Self.removeFromStore(files["flake.lock"]!)
        let archive = try await Fixtures.archive(files, root: "flakeapp", zip: false)
        let (_, _, end, _) = try await runBuild(
            { job in BuildRequest(jobID: job, nonce: testNonce, sourceData: Data(archive).base64EncodedString(), sourceName: "flake.tar.gz") },
            fetchAllowsLoopback: false)
        #expect(end.type == .failed && end.failurePhase == "fetch", "\(end.message ?? "")")
        #expect(end.message?.contains("flake input 'dep'") == true, "\(end.message ?? "")")
    }
}
