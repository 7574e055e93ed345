import Foundation

/// A bare git repository made by the test, served by a real `git daemon` on 127.0.0.1.
public final class GitFixture: @unchecked Sendable {
    public let dir: TemporaryDirectory
    public let daemon: LaunchedProcess
    public let port: Int
    public var base: String { dir.file("repos") }

    public init() async throws {
        dir = try TemporaryDirectory(prefix: "kiln-git")
        try FileManager.default.createDirectory(atPath: dir.file("repos"), withIntermediateDirectories: true)
        port = try FreePort.pick()
        daemon = try await LaunchedProcess(
            "/usr/lib/git-core/git-daemon",
            [
                "--reuseaddr", "--export-all", "--listen=127.0.0.1", "--port=\(port)",
                "--base-path=\(dir.file("repos"))", "--informative-errors", dir.file("repos"),
            ])
        // Wait until it accepts connections.
        guard await eventually(within: .seconds(5), every: .milliseconds(50), { (try? RawSocket(port: port)) != nil }) else {
            throw LaunchError("git daemon did not start")
        }
    }

    public func url(_ name: String) -> String { "git://127.0.0.1:\(port)/\(name).git" }

    /// Creates `name.git` from `files`, committed on `main` with a fixed date; returns the commit id.
    @discardableResult
    public func createRepository(_ name: String, files: [String: String], tag: String? = nil, branch: String? = nil) async throws -> String {
        let work = dir.file("work-\(name)")
        try FileManager.default.createDirectory(atPath: work, withIntermediateDirectories: true)
        try await git(["init", "-q", "-b", "main", work])
        for (path, content) in files {
            let full = work + "/" + path
            try FileManager.default.createDirectory(atPath: (full as NSString).deletingLastPathComponent, withIntermediateDirectories: true)
            try content.write(toFile: full, atomically: true, encoding: .utf8)
        }
        try await git(["-C", work, "add", "-A"])
        try await git(["-C", work, "commit", "-q", "-m", "fixture"])
        if let tag { try await git(["-C", work, "tag", tag]) }
        if let branch { try await git(["-C", work, "branch", branch]) }
        let commit = try await git(["-C", work, "rev-parse", "HEAD"]).trimmingCharacters(in: .whitespacesAndNewlines)
        try await git(["clone", "-q", "--bare", work, base + "/\(name).git"])
        return commit
    }

    @discardableResult
    public func git(_ args: [String]) async throws -> String {
        try await Command.run(
            "/usr/bin/git", args,
            environment: [
                "PATH": "/usr/bin:/bin", "HOME": dir.path, "GIT_AUTHOR_NAME": "Kiln Test", "GIT_AUTHOR_EMAIL": "test@kiln.invalid",
                "GIT_COMMITTER_NAME": "Kiln Test", "GIT_COMMITTER_EMAIL": "test@kiln.invalid",
                "GIT_AUTHOR_DATE": "2024-01-02T03:04:05Z", "GIT_COMMITTER_DATE": "2024-01-02T03:04:05Z",
            ])
    }

    public func stop() { daemon.stop() }
}
