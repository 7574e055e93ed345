import Foundation
import KilnArchive
import KilnAttestation
import KilnProcess
import Synchronization

/// Nix builds through the nix-daemon, offline (`--option substituters ''`): `flake.nix` → `nix build`,
/// `default.nix` → `nix-build`. The daemon builds in its own sandbox; inside Kiln's sandbox /nix is
/// read-only, so the build cannot write to the store except through the daemon.
public struct NixBuilder: ProjectBuilder {
    public let flake: Bool
    public let daemonSocket: String
    public let limits: WorkerConfiguration.Limits
    /// `build_options.attribute`: the attribute (`-A`) or the flake package to build.
    public let attribute: String?
    /// The job's own nix-daemon, held to the job's limits (nil: the shared one at `daemonSocket`).
    public let jobDaemon: JobNixDaemon?

    public init(
        flake: Bool, daemonSocket: String = NixDaemon.defaultSocket, jobDaemon: JobNixDaemon? = nil, limits: WorkerConfiguration.Limits,
        attribute: String? = nil
    ) {
        self.flake = flake
        self.daemonSocket = daemonSocket
        self.jobDaemon = jobDaemon
        self.limits = limits
        self.attribute = attribute
    }

    /// The flake reference (`/build/src#` or `/build/src#attr`) and nix-build's attribute arguments.
    var flakeReference: String { "\(Sandbox.sourcePath)#" + (attribute ?? "") }
    var attributeArguments: [String] { attribute.map { ["-A", $0] } ?? [] }

    public func build(_ context: BuildContext) async throws -> BuiltProject {
        let fm = FileManager.default
        let out = context.outputDirectory
        try fm.createDirectory(atPath: out + "/home", withIntermediateDirectories: true)
        var mounts = Sandbox.Mounts(source: context.sourceRoot, output: out)
        mounts.nix = true
        mounts.jobNixDaemon = jobDaemon
        let env = [
            "PATH": "/usr/bin:/bin", "HOME": "\(Sandbox.outputPath)/home", "XDG_CACHE_HOME": "\(Sandbox.outputPath)/cache",
            "NIX_REMOTE": jobDaemon == nil ? NixDaemon.remote(socket: daemonSocket) : JobNixDaemon.sandboxRemote, "SOURCE_DATE_EPOCH": String(context.sourceDateEpoch),
            "LANG": "C.UTF-8", "TZ": "UTC", "TMPDIR": "/tmp",
        ]
        let offline = ["--option", "substituters", "", "--option", "fallback", "false"] + Self.noImportFromDerivation
        let command: [String] =
            flake
            ? ["/usr/bin/nix", "--extra-experimental-features", "nix-command flakes", "build", "-L"] + offline
                + ["--out-link", "\(Sandbox.outputPath)/result", flakeReference]
            : ["/usr/bin/nix-build"] + offline + attributeArguments + ["--out-link", "\(Sandbox.outputPath)/result", "\(Sandbox.sourcePath)/default.nix"]
        try await refuseNetworkedDerivations(context: context, environment: env, mounts: mounts)
        let result = try await context.sandbox.run(
            name: context.jobID, command: command, environment: env, mounts: mounts,
            cancel: context.cancel, onLine: context.log)
        try check(result, what: flake ? "nix build" : "nix-build", limits: limits)

        // result, result-dev, result-2 …: their targets are checked and copied in the package phase.
        let entries: [(name: String, kind: ConfinedDirectory.EntryKind)]
        do { entries = try ConfinedDirectory(path: out).entries() } catch {
            throw BuildFailure.internalError("build", "cannot list the Nix build's out-links: \(error)")
        }
        let reported = entries.filter { $0.name.hasPrefix("result") }.map { ReportedArtifact.nixOutLink($0.name) }
        guard !reported.isEmpty else {
            throw BuildFailure.build("the Nix build produced no output files", fix: "make the derivation's $out a file or a directory of files")
        }

        let version = (try? await ProcessRunner.capture("/usr/bin/nix", ["--version"], environment: ["PATH": "/usr/bin:/bin"]).stdout) ?? "unknown"
        var buildConfig: [String] = []
        if flake, (try? context.sourceTree.kind(of: "flake.lock")) != nil { buildConfig.append("flake.lock") }
        return BuiltProject(
            buildType: flake ? BuildType.nixFlake : BuildType.nix, buildConfig: buildConfig, artifacts: reported,
            internalParameters: [
                "command": command.joined(separator: " "), "nix": version, "substituters": "none (offline)",
                "network": "none (fixed-output derivations not already in the store are refused)",
                "nixDaemon": jobDaemon == nil
                    ? "the operator's shared daemon (its builds run outside the job's limits)"
                    : "the job's own, in the job's cgroup (sandboxed builds, no substituters or remote builders)",
                "SOURCE_DATE_EPOCH": String(context.sourceDateEpoch),
            ],
            resolvedDependencies: [toolchainDescriptor(name: "nix", path: "/usr/bin/nix", version: version, cache: context.digestCache)])
    }
}

extension NixBuilder {
    /// Nix runs fixed-output derivations (fetchers) with the host's network, whatever its sandbox
    /// setting, and a shared daemon cannot be told otherwise for one client. So before building, the
    /// whole closure is listed (`nix show-derivation -r`, in the same sandbox, as the same untrusted
    /// client) and the job is refused if any fixed-output derivation would actually run, i.e. its
    /// output is not already in the store. Nothing of the build has run when this refuses.
    ///
    /// Evaluation itself must not build: with import-from-derivation a project makes the daemon build a
    /// derivation (a fixed-output one, with the host's network) while it is being evaluated, before this
    /// check can look at anything. Every evaluation Kiln runs turns it off (#29).
    static let noImportFromDerivation = ["--option", "allow-import-from-derivation", "false"]

    func refuseNetworkedDerivations(context: BuildContext, environment: [String: String], mounts: Sandbox.Mounts) async throws {
        let features = ["--extra-experimental-features", "nix-command flakes"]
        let command: [String] =
            flake
            ? ["/usr/bin/nix"] + features + Self.noImportFromDerivation + ["--option", "substituters", "", "show-derivation", "-r", flakeReference]
            : [
                "/bin/sh", "-c",
                "set -e; f=$1; shift; drvs=$(/usr/bin/nix-instantiate --option allow-import-from-derivation false --option substituters '' \"$@\" \"$f\"); exec /usr/bin/nix --extra-experimental-features nix-command show-derivation -r $drvs",
                "sh", "\(Sandbox.sourcePath)/default.nix",
            ] + attributeArguments
        let json = OutputBuffer(limit: 32 << 20)
        let r = try await context.sandbox.run(
            name: context.jobID + "-plan", command: command, environment: environment, mounts: mounts,
            cancel: context.cancel
        ) { stream, line in
            if stream == .stdout { json.append(line) } else { context.log(stream, line) }
        }
        try check(r, what: flake ? "nix show-derivation (evaluating the flake)" : "nix-instantiate (evaluating default.nix)", limits: limits)
        guard let text = json.text, let plan = try? JSONSerialization.jsonObject(with: Data(text.utf8)) as? [String: Any] else {
            throw BuildFailure.build("cannot read the derivations the build would run (the plan is not JSON or larger than 32 MiB)")
        }
        // No store to look in: every output counts as not present (the stricter answer).
        let store = try? ConfinedDirectory(path: "/nix/store")
        for drv in plan.keys.sorted() {
            guard let outputs = (plan[drv] as? [String: Any])?["outputs"] as? [String: Any] else { continue }
            for case (_, let output as [String: Any]) in outputs where output["hash"] != nil || output["hashAlgo"] != nil {
                let path = output["path"] as? String ?? ""
                // Unreadable counts as not present (the stricter answer: the derivation would have to run).
                let present = path.hasPrefix("/nix/store/") && (try? store?.kind(of: String(path.dropFirst("/nix/store/".count)))) != nil
                if !present {
                    throw BuildFailure.build(
                        "the build needs the fixed-output derivation \(drv), which Nix would run with network access; builds on this farm get no network",
                        fix: "put what it fetches into the uploaded source instead, or ask the operator to pre-fetch it into the store")
                }
            }
        }
    }
}

/// Collects a command's stdout up to a limit (past it, `text` is nil).
final class OutputBuffer: Sendable {
    private struct State {
        var lines: [String] = []
        var bytes = 0
        var overflow = false
    }
    private let state = Mutex(State())
    let limit: Int
    init(limit: Int) { self.limit = limit }
    func append(_ line: String) {
        state.withLock { s in
            s.bytes += line.utf8.count + 1
            if s.bytes > limit {
                s.overflow = true
                s.lines = []
            } else if !s.overflow {
                s.lines.append(line)
            }
        }
    }
    var text: String? { state.withLock { $0.overflow ? nil : $0.lines.joined(separator: "\n") } }
}
