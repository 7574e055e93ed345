import Foundation
import KilnArchive
import KilnProcess

/// Gets the user's source into `<scratch>/src` (design §5 step 1) and records what it was.
public struct SourceFetcher: Sendable {
    public struct Fetched: Sendable {
        /// The project root on the host.
        public var root: String
        /// SOURCE_DATE_EPOCH: commit time, or the newest mtime in the archive.
        public var sourceDateEpoch: Int64
        public var gitCommit: String?
        public var gitTree: String?
        public var archiveSha256: String?
        public var archiveName: String?
    }

    public let git: String
    public let fetchTimeout: Duration
    public let archiveLimits: WorkerConfiguration.Limits.ArchiveLimits
    let hostPolicy: SourceHostPolicy

    public init(
        git: String, fetchTimeout: Duration, archiveLimits: WorkerConfiguration.Limits.ArchiveLimits, allowedHosts: [String] = [],
        onlyAllowedHosts: Bool = false
    ) {
        self.git = git
        self.fetchTimeout = fetchTimeout
        self.archiveLimits = archiveLimits
        self.hostPolicy = SourceHostPolicy(allowed: allowedHosts, onlyAllowed: onlyAllowedHosts)
    }

    /// Only schemes that cannot read the worker's own disk or use its credentials.
    public static func validateRepositoryURL(_ url: String) throws(BuildFailure) {
        let lower = url.lowercased()
        guard lower.hasPrefix("https://") || lower.hasPrefix("http://") || lower.hasPrefix("git://") else {
            throw .source("repo_url must use https, http or git (got '\(url)')", fix: "use an https:// URL of the repository")
        }
        let afterScheme = url[url.range(of: "://")!.upperBound...]
        let authority = afterScheme.prefix { $0 != "/" }
        if authority.contains("@") {
            throw .source("repo_url must not embed credentials", fix: "use a public URL without user:password@")
        }
        if authority.isEmpty {
            throw .source("repo_url has no host", fix: "use a URL like https://host/owner/repo.git")
        }
    }

    // MARK: git

    /// Shallow fetch of `ref` (branch, tag or commit); falls back to a full fetch for refs the server
    /// will not serve shallowly (abbreviated commits, old servers).
    public func fetchGit(
        url: String, ref: String, into dir: String, cancel: CancelSwitch?,
        log: @escaping @Sendable (String) -> Void
    ) async throws -> Fetched {
        try Self.validateRepositoryURL(url)
        guard !ref.isEmpty, !ref.hasPrefix("-"), !ref.contains(".."), ref.utf8.allSatisfy({ $0 > 0x20 && $0 < 0x7F }) else {
            throw BuildFailure.source("repo_ref '\(ref)' is not a valid branch, tag or commit", fix: "send a branch, tag or commit id")
        }
        let decision = try hostPolicy.check(url: url)
        // No redirects (they could lead anywhere); the checked address pinned for HTTP.
        var network = ["-c", "http.followRedirects=false"]
        if let pin = decision.pin { network += ["-c", "http.curloptResolve=\(pin)"] }
        try FileManager.default.createDirectory(atPath: dir, withIntermediateDirectories: true)
        _ = try await gitRun(["init", "-q", dir], cwd: nil, cancel: cancel)
        _ = try await gitRun(["remote", "add", "origin", url], cwd: dir, cancel: cancel)

        log("fetching \(ref) from \(url)")
        let shallow = try await gitRun(network + ["fetch", "--depth", "1", "--no-tags", "origin", ref], cwd: dir, cancel: cancel, check: false)
        var commit: String?
        if shallow.outcome.succeeded {
            commit = try await revParse("FETCH_HEAD^{commit}", cwd: dir, cancel: cancel)
        } else {
            if Self.looksUnreachable(shallow.stderr) {
                throw BuildFailure.source(
                    "cannot reach the repository at \(url)", retryable: true,
                    fix: "check that the repository URL is right and reachable from the farm")
            }
            log("shallow fetch of \(ref) failed (\(Self.lastLine(shallow.stderr))); fetching the full history")
            let full = try await gitRun(
                network + ["fetch", "--no-tags", "origin", "+refs/heads/*:refs/remotes/origin/*", "+refs/tags/*:refs/tags/*"],
                cwd: dir, cancel: cancel, check: false)
            guard full.outcome.succeeded else {
                throw BuildFailure.source(
                    "cannot fetch \(url): \(Self.lastLine(full.stderr))", retryable: Self.looksUnreachable(full.stderr),
                    fix: "check that the repository URL is right and reachable from the farm")
            }
            for candidate in ["refs/remotes/origin/\(ref)", "refs/tags/\(ref)", ref] {
                if let c = try? await revParse("\(candidate)^{commit}", cwd: dir, cancel: cancel) {
                    commit = c
                    break
                }
            }
        }
        guard let commit else {
            throw BuildFailure.source("ref '\(ref)' was not found in \(url)", fix: "send an existing branch, tag or commit id")
        }
        _ = try await gitRun(["-c", "advice.detachedHead=false", "checkout", "-q", "--detach", commit], cwd: dir, cancel: cancel)
        let tree = try await revParse("HEAD^{tree}", cwd: dir, cancel: cancel)
        let time = try await gitRun(["log", "-1", "--format=%ct", commit], cwd: dir, cancel: cancel)
        // The .git directory is not part of the build input.
        try? FileManager.default.removeItem(atPath: dir + "/.git")
        log("checked out \(commit) (tree \(tree))")
        return Fetched(
            root: dir, sourceDateEpoch: Int64(time.stdout.trimmingCharacters(in: .whitespacesAndNewlines)) ?? 0,
            gitCommit: commit, gitTree: tree, archiveSha256: nil, archiveName: nil)
    }

    private func revParse(_ expr: String, cwd: String, cancel: CancelSwitch?) async throws -> String {
        let r = try await gitRun(["rev-parse", "--verify", "-q", expr], cwd: cwd, cancel: cancel, check: false)
        let out = r.stdout.trimmingCharacters(in: .whitespacesAndNewlines)
        guard r.outcome.succeeded, out.count == 40 else { throw BuildFailure.source("cannot resolve \(expr)", fix: "") }
        return out
    }

    @discardableResult
    private func gitRun(_ args: [String], cwd: String?, cancel: CancelSwitch?, check: Bool = true) async throws
        -> (outcome: ProcessRunner.Outcome, stdout: String, stderr: String)
    {
        // No prompts, no credential helpers, no local-file transports, no system/global config.
        let env = [
            "PATH": "/usr/bin:/bin", "GIT_TERMINAL_PROMPT": "0", "GIT_CONFIG_NOSYSTEM": "1", "GIT_CONFIG_GLOBAL": "/dev/null",
            "HOME": "/nonexistent", "GIT_ALLOW_PROTOCOL": "http:https:git", "LANG": "C",
        ]
        let base = ["-c", "credential.helper=", "-c", "protocol.file.allow=never", "-c", "core.hooksPath=/dev/null"]
        let r = try await ProcessRunner.capture(git, base + args, environment: env, workingDirectory: cwd, timeout: fetchTimeout, cancel: cancel)
        if r.outcome.cancelled { throw BuildCancelled() }
        if r.outcome.timedOut {
            throw BuildFailure.source("git \(args.first ?? "") timed out after \(fetchTimeout)", retryable: true, fix: "retry later, or use a smaller repository")
        }
        if check && !r.outcome.succeeded {
            throw BuildFailure.source("git \(args.first ?? "") failed: \(Self.lastLine(r.stderr))", fix: "check the repository URL and ref")
        }
        return r
    }

    static func lastLine(_ s: String) -> String {
        s.split(separator: "\n").last.map(String.init)?.trimmingCharacters(in: .whitespaces) ?? s
    }

    static func looksUnreachable(_ stderr: String) -> Bool {
        let s = stderr.lowercased()
        return [
            "could not resolve host", "connection refused", "unable to connect", "failed to connect", "timed out",
            "could not read from remote", "unable to access", "repository not found", "does not appear to be a git repository",
        ]
        .contains { s.contains($0) } && !s.contains("couldn't find remote ref")
    }

    // MARK: archives

    /// Extracts an uploaded archive safely. A single top-level directory is the project root;
    /// otherwise the extraction directory itself is, named `sourceName`.
    public func extractArchive(_ bytes: [UInt8], name: String?, scratch: String, unpackInto unpack: String, into dir: String) throws -> Fetched {
        guard !bytes.isEmpty else { throw BuildFailure.source("source_data is empty", fix: "send a non-empty ZIP or tar.gz") }
        let isZip = bytes.starts(with: [0x50, 0x4B])
        let isGzip = bytes.starts(with: [0x1F, 0x8B])
        guard isZip || isGzip else {
            throw BuildFailure.source("source_data is neither a ZIP nor a gzip-compressed tar", fix: "send a .zip or .tar.gz of the project")
        }
        let path = scratch + "/upload" + (isZip ? ".zip" : ".tar.gz")
        guard FileManager.default.createFile(atPath: path, contents: Data(bytes), attributes: [.posixPermissions: 0o600]) else {
            throw BuildFailure.farm(
                "source", "the worker cannot write the uploaded source to its scratch directory",
                operatorAction: "check the free space and permissions of the workers' scratch disk")
        }
        defer { try? FileManager.default.removeItem(atPath: path) }
        try FileManager.default.createDirectory(atPath: unpack, withIntermediateDirectories: true)
        let extractor = ArchiveExtractor(
            configuration: .init(
                maxEntries: archiveLimits.maxEntries, maxTotalBytes: archiveLimits.maxBytes,
                maxCompressionRatio: archiveLimits.maxRatio))
        let summary: ArchiveExtractor.Summary
        do { summary = try extractor.extract(archivePath: path, into: unpack) } catch let e as ArchiveError {
            throw BuildFailure.source(
                "the uploaded archive was refused: \(e.message)", fix: "send an archive without links out of the tree, device files, or excessive size")
        }
        // A single top-level *directory* (not a link to one) is the project root.
        var root = unpack
        if summary.topLevelNames.count == 1,
            (try? ConfinedDirectory(path: unpack).kind(of: summary.topLevelNames[0])) == .directory
        {
            root = unpack + "/" + summary.topLevelNames[0]
        }
        try? FileManager.default.removeItem(atPath: dir)
        guard rename(root, dir) == 0 else {
            throw BuildFailure.internalError("source", "cannot move the unpacked source into place: \(String(cString: strerror(errno)))")
        }
        if root != unpack { try? FileManager.default.removeItem(atPath: unpack) }
        return Fetched(
            root: dir, sourceDateEpoch: summary.newestMTime, gitCommit: nil, gitTree: nil,
            archiveSha256: FileDigest.of(bytes: bytes).sha256, archiveName: name)
    }
}
