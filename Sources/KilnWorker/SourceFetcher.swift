import Foundation
import KilnArchive
import KilnMessages
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
        /// True when the commit is the fetch service's answer for a branch or tag (the request did not
        /// pin it): provenance records whose word it is.
        public var refResolvedByFetchService = false
    }

    public let git: String
    public let fetchTimeout: Duration
    public let archiveLimits: WorkerConfiguration.Limits.ArchiveLimits
    /// The farm's fetch service (nil: this fetcher only unpacks uploads).
    let fetch: FetchClient?

    init(git: String, fetchTimeout: Duration, archiveLimits: WorkerConfiguration.Limits.ArchiveLimits, fetch: FetchClient? = nil) {
        self.git = git
        self.fetchTimeout = fetchTimeout
        self.archiveLimits = archiveLimits
        self.fetch = fetch
    }

    public init(git: String, fetchTimeout: Duration, archiveLimits: WorkerConfiguration.Limits.ArchiveLimits) {
        self.init(git: git, fetchTimeout: fetchTimeout, archiveLimits: archiveLimits, fetch: nil)
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

    /// The commit `ref` names, from the farm's fetch service as a pack of exactly that commit and
    /// its tree; checked here: `git index-pack` hashes every object (so the tree checked out is the
    /// one the commit names), the commit must be in the pack, and a request that pinned a commit gets
    /// that commit or a refusal. The worker itself never reaches the repository.
    public func fetchGit(
        url: String, ref: String, into dir: String, cancel: CancelSwitch?,
        log: @escaping @Sendable (String) -> Void
    ) async throws -> Fetched {
        try Self.validateRepositoryURL(url)
        guard FetchNames.isValidGitRef(ref) else {
            throw BuildFailure.source("repo_ref '\(ref)' is not a valid branch, tag or commit", fix: "send a branch, tag or commit id")
        }
        guard let fetch else {
            throw BuildFailure.farm("source", "this worker has no fetch service to get repositories from", operatorAction: "run kiln-fetch on the farm")
        }
        try FileManager.default.createDirectory(atPath: dir, withIntermediateDirectories: true)
        let pack = (dir as NSString).deletingLastPathComponent + "/.kiln-\(UUID().uuidString).pack"
        defer { try? FileManager.default.removeItem(atPath: pack) }  // scratch; removed with the workspace if this fails
        log("fetching \(ref) from \(url) through the farm's fetch service")
        let commit: String
        do { commit = try await fetch.gitPack(url: url, ref: ref, into: pack) } catch let failure as FetchClient.Failure {
            throw BuildFailure.source(
                "cannot fetch \(ref) from \(url): \(failure.message)", retryable: failure.retryable,
                fix: "check that the repository URL and ref are right and reachable from the farm")
        }
        let pinned = FetchNames.isCommitID(ref)
        if pinned, commit != ref {
            throw BuildFailure.source(
                "the fetch service sent commit \(commit) for the pinned commit \(ref): refused", fix: "retry; if it persists, tell the farm operator")
        }
        _ = try await gitRun(["init", "-q", dir], cwd: nil, cancel: cancel)
        let indexed = try await gitRun(["-C", dir, "index-pack", "--stdin", "--strict"], cwd: nil, cancel: cancel, check: false, stdin: pack)
        guard indexed.outcome.succeeded else {
            throw BuildFailure.source(
                "the pack of \(url) \(ref) from the fetch service is not a valid git pack (\(Self.lastLine(indexed.stderr))): refused",
                fix: "retry; if it persists, tell the farm operator")
        }
        // The pack has no parents: mark the commit shallow, as a depth-1 clone would.
        try Data("\(commit)\n".utf8).write(to: URL(fileURLWithPath: dir + "/.git/shallow"))
        guard (try? await revParse("\(commit)^{commit}", cwd: dir, cancel: cancel)) == commit else {
            throw BuildFailure.source(
                "the pack from the fetch service does not hold commit \(commit) of \(url): refused", fix: "retry; if it persists, tell the farm operator")
        }
        _ = try await gitRun(["-c", "advice.detachedHead=false", "checkout", "-q", "--detach", commit], cwd: dir, cancel: cancel)
        let tree = try await revParse("HEAD^{tree}", cwd: dir, cancel: cancel)
        let time = try await gitRun(["log", "-1", "--format=%ct", commit], cwd: dir, cancel: cancel)
        // The .git directory is not part of the build input.
        try? FileManager.default.removeItem(atPath: dir + "/.git")
        log("checked out \(commit) (tree \(tree))\(pinned ? "" : "; the fetch service resolved \(ref) to it")")
        var fetched = Fetched(
            root: dir, sourceDateEpoch: Int64(time.stdout.trimmingCharacters(in: .whitespacesAndNewlines)) ?? 0,
            gitCommit: commit, gitTree: tree, archiveSha256: nil, archiveName: nil)
        fetched.refResolvedByFetchService = !pinned
        return fetched
    }

    private func revParse(_ expr: String, cwd: String, cancel: CancelSwitch?) async throws -> String {
        let r = try await gitRun(["rev-parse", "--verify", "-q", expr], cwd: cwd, cancel: cancel, check: false)
        let out = r.stdout.trimmingCharacters(in: .whitespacesAndNewlines)
        guard r.outcome.succeeded, out.count == 40 else { throw BuildFailure.source("cannot resolve \(expr)", fix: "") }
        return out
    }

    @discardableResult
    private func gitRun(_ args: [String], cwd: String?, cancel: CancelSwitch?, check: Bool = true, stdin: String? = nil) async throws
        -> (outcome: ProcessRunner.Outcome, stdout: String, stderr: String)
    {
        // Local git only (no remote is ever named): no prompts, credential helpers or system/global config.
        let env = [
            "PATH": "/usr/bin:/bin", "GIT_TERMINAL_PROMPT": "0", "GIT_CONFIG_NOSYSTEM": "1", "GIT_CONFIG_GLOBAL": "/dev/null",
            "HOME": "/nonexistent", "GIT_ALLOW_PROTOCOL": "none", "LANG": "C",
        ]
        let base = ["-c", "credential.helper=", "-c", "protocol.file.allow=never", "-c", "core.hooksPath=/dev/null"]
        var (executable, arguments, environment) = (git, base + args, env)
        if let stdin {
            // git reads the file on its standard input; the shell only redirects it.
            (executable, arguments) = ("/bin/sh", ["-c", "exec \"$0\" \"$@\" < \"$KILN_STDIN\"", git] + base + args)
            environment["KILN_STDIN"] = stdin
        }
        let r = try await ProcessRunner.capture(executable, arguments, environment: environment, workingDirectory: cwd, timeout: fetchTimeout, cancel: cancel)
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
        // Cleanup inside the job's workspace, which is removed with the job anyway.
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
