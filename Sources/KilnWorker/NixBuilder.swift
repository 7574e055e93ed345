import Foundation
import KilnArchive
import KilnAttestation

/// Nix builds through the nix-daemon, offline (`--option substituters ''`): `flake.nix` → `nix build`,
/// `default.nix` → `nix-build`. The daemon builds in its own sandbox; inside Kiln's sandbox /nix is
/// read-only, so the build cannot write to the store except through the daemon.
public struct NixBuilder: ProjectBuilder {
    public let flake: Bool
    public let limits: WorkerConfiguration.Limits

    public init(flake: Bool, limits: WorkerConfiguration.Limits) {
        self.flake = flake
        self.limits = limits
    }

    public func build(_ context: BuildContext) async throws -> BuiltProject {
        let fm = FileManager.default
        let out = context.outputDirectory
        try fm.createDirectory(atPath: out + "/home", withIntermediateDirectories: true)
        var mounts = Sandbox.Mounts(source: context.sourceRoot, output: out)
        mounts.nix = true
        let env = ["PATH": "/usr/bin:/bin", "HOME": "\(Sandbox.outputPath)/home", "XDG_CACHE_HOME": "\(Sandbox.outputPath)/cache",
                   "NIX_REMOTE": "daemon", "SOURCE_DATE_EPOCH": String(context.sourceDateEpoch), "LANG": "C.UTF-8", "TZ": "UTC", "TMPDIR": "/tmp"]
        let offline = ["--option", "substituters", "", "--option", "fallback", "false"]
        let command: [String] = flake
            ? ["/usr/bin/nix", "--extra-experimental-features", "nix-command flakes", "build", "-L"] + offline
                + ["--out-link", "\(Sandbox.outputPath)/result", "\(Sandbox.sourcePath)#"]
            : ["/usr/bin/nix-build"] + offline + ["--out-link", "\(Sandbox.outputPath)/result", "\(Sandbox.sourcePath)/default.nix"]
        let result = try await context.sandbox.run(name: context.jobID, command: command, environment: env, mounts: mounts,
                                                   cancel: context.cancel, onLine: context.log)
        try check(result, what: flake ? "nix build" : "nix-build", limits: limits)

        // result, result-dev, result-2 …: their targets are checked and copied in the package phase.
        let entries: [(name: String, kind: ConfinedDirectory.EntryKind)]
        do { entries = try ConfinedDirectory(path: out).entries() } catch {
            throw BuildFailure.internalError("build", "cannot list the Nix build's out-links: \(error)")
        }
        let reported = entries.filter { $0.name.hasPrefix("result") }.map { ReportedArtifact.nixOutLink($0.name) }
        guard !reported.isEmpty else { throw BuildFailure.build("the Nix build produced no output files", fix: "make the derivation's $out a file or a directory of files") }

        let version = (try? await ProcessRunner.capture("/usr/bin/nix", ["--version"], environment: ["PATH": "/usr/bin:/bin"]).stdout) ?? "unknown"
        var buildConfig: [String] = []
        if flake, (try? context.sourceTree.kind(of: "flake.lock")) != nil { buildConfig.append("flake.lock") }
        return BuiltProject(buildType: flake ? BuildType.nixFlake : BuildType.nix, buildConfig: buildConfig, artifacts: reported,
                            internalParameters: ["command": command.joined(separator: " "), "nix": version, "substituters": "none (offline)",
                                                 "SOURCE_DATE_EPOCH": String(context.sourceDateEpoch)],
                            resolvedDependencies: [toolchainDescriptor(name: "nix", path: "/usr/bin/nix", version: version)])
    }
}
