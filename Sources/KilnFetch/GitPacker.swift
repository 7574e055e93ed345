import Foundation
import KilnMessages
import KilnProcess
import NIOConcurrencyHelpers

/// Fetches one commit of a repository and packs exactly it: the commit, its tree and their blobs, as
/// a git pack file the worker indexes (`git index-pack`, which hashes every object) and checks out by
/// the commit id. The pack is shallow — no parents — so its size is the tree's, not the history's.
///
/// `git` here runs on the fetch service's network, never a worker's, under the host policy: no
/// redirects, the checked address pinned, no prompts, credential helpers, hooks, local-file transports
/// or system configuration. What git prints is kept only as its last lines (a hostile server decides
/// how much it prints).
public struct GitPacker: Sendable {
    public struct Packed: Sendable, Equatable {
        public var commit: String
        public var pack: String
        public var size: Int64
    }

    public var git = "/usr/bin/git"
    public var policy: SourceHostPolicy
    public var timeout: Duration = .seconds(600)
    /// Largest pack served (a repository tree larger than this is refused).
    public var maxPackBytes: Int64 = 2 << 30

    public init(policy: SourceHostPolicy) { self.policy = policy }

    /// Only schemes that cannot read the service's own disk or use its credentials.
    static func validate(url: String) throws(FetchRefusal) {
        let lower = url.lowercased()
        guard url.utf8.count <= 2048, lower.hasPrefix("https://") || lower.hasPrefix("http://") || lower.hasPrefix("git://") else {
            throw FetchRefusal(.badRequest, "repo_url must be an https, http or git URL of at most 2048 bytes")
        }
        guard url.utf8.allSatisfy({ $0 > 0x20 && $0 < 0x7F }) else { throw FetchRefusal(.badRequest, "repo_url must be printable ASCII") }
        let afterScheme = url[url.range(of: "://")!.upperBound...]
        let authority = afterScheme.prefix { $0 != "/" }
        if authority.contains("@") { throw FetchRefusal(.badRequest, "repo_url must not embed credentials") }
        if authority.isEmpty { throw FetchRefusal(.badRequest, "repo_url has no host") }
    }

    /// Resolves `ref` at `url` and writes the pack of its commit into `directory` (a fresh one the
    /// caller removes).
    public func pack(url: String, ref: String, in directory: String) async throws(FetchRefusal) -> Packed {
        try Self.validate(url: url)
        guard FetchNames.isValidGitRef(ref) else { throw FetchRefusal(.badRequest, "repo_ref '\(ref.prefix(80))' is not a valid branch, tag or commit") }
        let decision = try policy.check(url: url)
        var network = ["-c", "http.followRedirects=false"]
        if let pin = decision.pin { network += ["-c", "http.curloptResolve=\(pin)"] }
        let repo = directory + "/repo.git"
        do {
            try FileManager.default.createDirectory(atPath: directory, withIntermediateDirectories: true)
        } catch {
            throw FetchRefusal(.upstream, "the fetch service cannot create its work directory: \(error)", retryable: true)
        }
        _ = try await run(["init", "-q", "--bare", repo], cwd: nil)
        let shallow = try await run(network + ["fetch", "--depth", "1", "--no-tags", url, ref], cwd: repo, check: false)
        var commit: String?
        if shallow.succeeded {
            commit = try await revParse("FETCH_HEAD^{commit}", cwd: repo)
        } else {
            if Self.looksUnreachable(shallow.lastLines) {
                throw FetchRefusal(.upstream, "cannot reach the repository at \(url): \(Self.lastLine(shallow.lastLines))", retryable: true)
            }
            // Refs a server will not serve shallowly (an abbreviated commit, an old server): the full history.
            let full = try await run(
                network + ["fetch", "--no-tags", url, "+refs/heads/*:refs/remotes/origin/*", "+refs/tags/*:refs/tags/*"], cwd: repo, check: false)
            guard full.succeeded else {
                throw FetchRefusal(
                    .upstream, "cannot fetch \(url): \(Self.lastLine(full.lastLines))", retryable: Self.looksUnreachable(full.lastLines))
            }
            for candidate in ["refs/remotes/origin/\(ref)", "refs/tags/\(ref)", ref] {
                if let found = try? await revParse("\(candidate)^{commit}", cwd: repo) {
                    commit = found
                    break
                }
            }
        }
        guard let commit else { throw FetchRefusal(.notFound, "ref '\(ref)' was not found in \(url)") }
        // A request that pins a commit gets that commit or nothing.
        if FetchNames.isCommitID(ref), commit != ref {
            throw FetchRefusal(.notFound, "\(url) has no commit \(ref)")
        }
        let pack = directory + "/\(commit).pack"
        let packed = try await packObjects(commit: commit, repo: repo, into: pack)
        guard packed <= maxPackBytes else {
            try? FileManager.default.removeItem(atPath: pack)  // refused anyway; a leftover is removed with the directory
            throw FetchRefusal(.tooLarge, "the tree of \(commit) packs to \(packed) bytes; this farm fetches at most \(maxPackBytes)")
        }
        return Packed(commit: commit, pack: pack, size: packed)
    }

    /// `git pack-objects --revs` of the one commit (parents left out: the clone is shallow), written
    /// to `file` under a file-size limit (`ulimit -f`, 512-byte blocks), so a tree larger than the
    /// limit stops git (SIGXFSZ) instead of filling the disk.
    private func packObjects(commit: String, repo: String, into file: String) async throws(FetchRefusal) -> Int64 {
        let input = directoryOf(file) + "/revs"
        guard FileManager.default.createFile(atPath: input, contents: Data("\(commit)\n".utf8)) else {
            throw FetchRefusal(.upstream, "the fetch service cannot write a pack request", retryable: true)
        }
        let blocks = maxPackBytes / 512 + 1
        let outcome: ProcessRunner.Outcome
        do {
            outcome = try await ProcessRunner.run(
                "/bin/sh", ["-c", "ulimit -f \(blocks) && exec \"$0\" -C \"$1\" pack-objects --revs --stdout -q < \"$2\" > \"$3\"", git, repo, input, file],
                environment: Self.environment, timeout: timeout
            ) { _, _ in }  // pack-objects -q prints nothing but errors; the exit status says enough
        } catch {
            throw FetchRefusal(.upstream, "git pack-objects could not run: \(error)", retryable: true)
        }
        let size = ((try? FileManager.default.attributesOfItem(atPath: file))?[.size] as? NSNumber)?.int64Value ?? 0
        if outcome.signal == SIGXFSZ || size > maxPackBytes { return maxPackBytes + 1 }
        guard outcome.succeeded else { throw FetchRefusal(.upstream, "git pack-objects failed (\(outcome.description))", retryable: true) }
        return size
    }

    private func directoryOf(_ file: String) -> String { (file as NSString).deletingLastPathComponent }

    private func revParse(_ expression: String, cwd: String) async throws(FetchRefusal) -> String {
        let r = try await run(["rev-parse", "--verify", "-q", expression], cwd: cwd, check: false)
        let out = r.stdout.trimmingCharacters(in: .whitespacesAndNewlines)
        guard r.succeeded, FetchNames.isCommitID(out) else { throw FetchRefusal(.notFound, "cannot resolve \(expression)") }
        return out
    }

    /// No prompts, no credential helpers, no local-file transports, no system or global configuration.
    static let environment = [
        "PATH": "/usr/bin:/bin", "GIT_TERMINAL_PROMPT": "0", "GIT_CONFIG_NOSYSTEM": "1", "GIT_CONFIG_GLOBAL": "/dev/null",
        "HOME": "/nonexistent", "GIT_ALLOW_PROTOCOL": "http:https:git", "LANG": "C",
    ]

    struct Run {
        var succeeded: Bool
        var stdout: String
        /// The last lines git printed on stderr (at most 20 of at most 4 KiB each).
        var lastLines: [String]
    }

    private func run(_ arguments: [String], cwd: String?, check: Bool = true) async throws(FetchRefusal) -> Run {
        let base = ["-c", "credential.helper=", "-c", "protocol.file.allow=never", "-c", "core.hooksPath=/dev/null"]
        let stdout = NIOLockedValueBox<[String]>([])
        let stderr = NIOLockedValueBox<[String]>([])
        let outcome: ProcessRunner.Outcome
        do {
            outcome = try await ProcessRunner.run(git, base + arguments, environment: Self.environment, workingDirectory: cwd, timeout: timeout) {
                stream, line in
                // Both kept bounded: stdout is one rev-parse line here, stderr is whatever the server makes git print.
                let box = stream == .stdout ? stdout : stderr
                box.withLockedValue {
                    $0.append(line)
                    if $0.count > 20 { $0.removeFirst($0.count - 20) }
                }
            }
        } catch {
            throw FetchRefusal(.upstream, "git could not run: \(error)", retryable: true)
        }
        if outcome.timedOut { throw FetchRefusal(.upstream, "git \(arguments.first ?? "") timed out after \(timeout)", retryable: true) }
        let result = Run(
            succeeded: outcome.succeeded, stdout: stdout.withLockedValue { $0.joined(separator: "\n") }, lastLines: stderr.withLockedValue { $0 })
        if check && !result.succeeded {
            throw FetchRefusal(.upstream, "git \(arguments.first ?? "") failed: \(Self.lastLine(result.lastLines))")
        }
        return result
    }

    static func lastLine(_ lines: [String]) -> String { lines.last?.trimmingCharacters(in: .whitespaces) ?? "" }

    static func looksUnreachable(_ lines: [String]) -> Bool {
        let s = lines.joined(separator: "\n").lowercased()
        return [
            "could not resolve host", "connection refused", "unable to connect", "failed to connect", "timed out",
            "could not read from remote", "unable to access", "repository not found", "does not appear to be a git repository",
        ]
        .contains { s.contains($0) } && !s.contains("couldn't find remote ref")
    }
}
