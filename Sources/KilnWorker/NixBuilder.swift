import Foundation
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

        // result, result-dev, result-2 …: copy what they point to.
        var collected = 0
        for link in try fm.contentsOfDirectory(atPath: out).sorted() where link.hasPrefix("result") {
            let target = try fm.destinationOfSymbolicLink(atPath: out + "/" + link)
            guard target.hasPrefix("/nix/store/") else { continue }
            var isDir: ObjCBool = false
            guard fm.fileExists(atPath: target, isDirectory: &isDir) else { continue }
            if isDir.boolValue {
                for rel in try fm.subpathsOfDirectory(atPath: target).sorted() {
                    var sub: ObjCBool = false
                    let full = target + "/" + rel
                    let attrs = try fm.attributesOfItem(atPath: full)
                    guard attrs[.type] as? FileAttributeType == .typeRegular, fm.fileExists(atPath: full, isDirectory: &sub), !sub.boolValue else { continue }
                    try collect(full, as: link + "/" + rel, into: context.artifactsDirectory)
                    collected += 1
                }
            } else {
                try collect(target, as: link, into: context.artifactsDirectory)
                collected += 1
            }
        }
        guard collected > 0 else { throw BuildFailure.build("the Nix build produced no output files", fix: "make the derivation's $out a file or a directory of files") }

        let version = (try? await ProcessRunner.capture("/usr/bin/nix", ["--version"], environment: ["PATH": "/usr/bin:/bin"]).stdout) ?? "unknown"
        var buildConfig: [String: String] = [:]
        if flake, fm.fileExists(atPath: context.sourceRoot + "/flake.lock") { buildConfig["flake.lock"] = context.sourceRoot + "/flake.lock" }
        return BuiltProject(buildType: flake ? BuildType.nixFlake : BuildType.nix, buildConfig: buildConfig,
                            internalParameters: ["command": command.joined(separator: " "), "nix": version, "substituters": "none (offline)",
                                                 "SOURCE_DATE_EPOCH": String(context.sourceDateEpoch)],
                            resolvedDependencies: [toolchainDescriptor(name: "nix", path: "/usr/bin/nix", version: version)])
    }
}
