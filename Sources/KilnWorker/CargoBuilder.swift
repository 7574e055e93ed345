import Foundation
import KilnAttestation
import KilnMessages
import KilnProcess
import Synchronization

/// `cargo build --release --locked --offline` in the sandbox, reproducibly: fixed paths, remapped path
/// prefixes, `CARGO_INCREMENTAL=0`, a fixed codegen-units, SOURCE_DATE_EPOCH; dependencies only from
/// vendored sources inside the project or an operator-provided vendor directory / local registry
/// (source replacement, mounted read-only).
public struct CargoBuilder: ProjectBuilder {
    public let sysroot: String
    public let vendorDirectory: String?
    public let limits: WorkerConfiguration.Limits
    public let options: BuildOptions
    /// Where the dependencies came from, for the provenance (the fetch phase's registry, or the farm's mirror).
    public var dependencySource: String?
    /// Set when the fetch phase generated Cargo.lock (how, for the provenance).
    public var lockOrigin: String?
    /// The farm's compiled-dependency cache (nil: every dependency is compiled by this build).
    var dependencyCache: DependencyCachePlan?
    static let toolchainPath = "/opt/rust"
    static let vendorPath = "/build/vendor"

    public init(sysroot: String, vendorDirectory: String?, limits: WorkerConfiguration.Limits, options: BuildOptions? = nil) {
        self.sysroot = sysroot
        self.vendorDirectory = vendorDirectory
        self.limits = limits
        self.options = options ?? BuildOptions()
    }

    /// `cargo build` with the request's `build_options` (validated at the gateway and again here by
    /// `BuildOptions.violation`, so each is one plain token).
    func buildArguments() throws -> [String] {
        if let problem = options.violation() { throw BuildFailure(phase: "build", message: problem, suggestedAction: "fix build_options") }
        var a = ["build", "--locked", "--offline", "--message-format=json-render-diagnostics"]
        if let profile = options.profile, profile != "release" { a += ["--profile", profile] } else { a.append("--release") }
        if let features = options.features, !features.isEmpty { a += ["--features", features.joined(separator: ",")] }
        if options.noDefaultFeatures == true { a.append("--no-default-features") }
        if let package = options.package { a += ["--package", package] }
        if let bin = options.bin { a += ["--bin", bin] }
        if let target = options.target {
            // Only a target this toolchain has (its standard library installed): otherwise the farm says so.
            guard FileManager.default.fileExists(atPath: sysroot + "/lib/rustlib/" + target + "/lib") else {
                throw BuildFailure.farm(
                    "build", "the workers' Rust toolchain has no standard library for target \(target)",
                    operatorAction: "install it on the workers (rustup target add \(target))", retryable: false)
            }
            a += ["--target", target]
        }
        return a
    }

    /// The active toolchain's sysroot, as rustup's `rustc` proxy reports it.
    public static func findSysroot() async -> String? {
        for rustc in ["/root/.cargo/bin/rustc", NSHomeDirectory() + "/.cargo/bin/rustc", "/usr/local/bin/rustc", "/usr/bin/rustc"]
        where FileManager.default.isExecutableFile(atPath: rustc) {
            if let r = try? await ProcessRunner.capture(rustc, ["--print", "sysroot"], environment: ["PATH": "/usr/bin:/bin", "HOME": NSHomeDirectory()]),
                r.outcome.succeeded
            {
                let path = r.stdout.trimmingCharacters(in: .whitespacesAndNewlines)
                if FileManager.default.isExecutableFile(atPath: path + "/bin/cargo") { return path }
            }
        }
        // rustup's proxy can fail under load (its own locks and settings): a worker that quietly came up
        // without Rust would decline every Cargo job. The toolchains rustup installed are plain
        // directories; take the first complete one.
        for home in ["/root/.rustup", NSHomeDirectory() + "/.rustup"] {
            let toolchains = home + "/toolchains"
            for name in ((try? FileManager.default.contentsOfDirectory(atPath: toolchains)) ?? []).sorted() {
                let path = toolchains + "/" + name
                if FileManager.default.isExecutableFile(atPath: path + "/bin/cargo"), FileManager.default.isExecutableFile(atPath: path + "/bin/rustc") {
                    return path
                }
            }
        }
        return nil
    }

    func environment(epoch: Int64) -> [String: String] {
        let remap = [
            "--remap-path-prefix=\(Sandbox.sourcePath)=/src", "--remap-path-prefix=\(Sandbox.outputPath)/cargo-home=/cargo",
            "--remap-path-prefix=\(Self.vendorPath)=/vendor",
        ].joined(separator: " ")
        return [
            "PATH": "\(Self.toolchainPath)/bin:/usr/bin:/bin", "HOME": "\(Sandbox.outputPath)/home",
            "CARGO_HOME": "\(Sandbox.outputPath)/cargo-home", "CARGO_TARGET_DIR": "\(Sandbox.outputPath)/target",
            "RUSTC": "\(Self.toolchainPath)/bin/rustc", "CARGO_INCREMENTAL": "0", "CARGO_PROFILE_RELEASE_CODEGEN_UNITS": "16",
            "CARGO_NET_OFFLINE": "true", "CARGO_TERM_COLOR": "never", "RUSTFLAGS": remap,
            "SOURCE_DATE_EPOCH": String(epoch), "LANG": "C.UTF-8", "TZ": "UTC", "TMPDIR": "/tmp",
        ]
    }

    public func build(_ context: BuildContext) async throws -> BuiltProject {
        let fm = FileManager.default
        let out = context.outputDirectory
        try fm.createDirectory(atPath: out + "/home", withIntermediateDirectories: true)
        try fm.createDirectory(atPath: out + "/cargo-home", withIntermediateDirectories: true)
        // The build writes there (cargo unpacks registry crates into its home): it must own them.
        if let user = context.sandbox.buildUser {
            for dir in [out + "/home", out + "/cargo-home"] { chown(dir, user.uid, user.gid) }
        }
        var mounts = Sandbox.Mounts(source: context.sourceRoot, output: out)
        mounts.readOnly.append((sysroot, Self.toolchainPath))
        if let vendorDirectory {
            mounts.readOnly.append((vendorDirectory, Self.vendorPath))
            let isRegistry = fm.fileExists(atPath: vendorDirectory + "/index")
            let config = """
                [source.crates-io]
                replace-with = "kiln-vendor"

                [source.kiln-vendor]
                \(isRegistry ? "local-registry" : "directory") = "\(Self.vendorPath)"

                [net]
                offline = true

                """
            try config.write(toFile: out + "/cargo-home/config.toml", atomically: true, encoding: .utf8)
        }
        let env = environment(epoch: context.sourceDateEpoch)
        let cargo = "\(Self.toolchainPath)/bin/cargo"

        // A missing lockfile is generated offline (from vendored sources) and shipped; otherwise a clear error.
        var generatedLock = false
        if (try? context.sourceTree.kind(of: "Cargo.lock")) == nil {
            context.log(.stderr, "[kiln] Cargo.lock is missing; generating it offline")
            let tail = LogTail()
            let r = try await context.sandbox.run(
                name: context.jobID + "-lock", command: [cargo, "generate-lockfile", "--offline"],
                environment: env, mounts: mounts, cancel: context.cancel
            ) { s, l in
                tail.add(l)
                context.log(s, l)
            }
            if r.process.cancelled { throw BuildCancelled() }
            guard r.process.succeeded else {
                throw BuildFailure.build(
                    "Cargo.lock is missing and could not be generated offline: \(tail.last)",
                    fix: "commit Cargo.lock, and vendor dependencies (cargo vendor) or ask the operator to provide them")
            }
            generatedLock = true
        }

        let cargoVersion = (try? await ProcessRunner.capture(sysroot + "/bin/cargo", ["--version"], environment: ["PATH": sysroot + "/bin:/usr/bin"]).stdout) ?? "unknown"
        let rustcVersion = (try? await ProcessRunner.capture(sysroot + "/bin/rustc", ["--version"], environment: ["PATH": sysroot + "/bin:/usr/bin"]).stdout) ?? "unknown"
        var dependencyOutcome: DependencyCacheOutcome?
        if let plan = dependencyCache {
            // Unreadable: the short version still names the compiler.
            let rustcVerbose =
                (try? await ProcessRunner.capture(sysroot + "/bin/rustc", ["-vV"], environment: ["PATH": sysroot + "/bin:/usr/bin"]).stdout) ?? rustcVersion
            dependencyOutcome = try await prepareDependencies(
                context, plan: plan, environment: env, arguments: try buildArguments(), rustc: rustcVerbose, cargoVersion: cargoVersion)
        }

        let artifacts = ArtifactCollector(limit: limits.maxArtifacts)
        let result = try await context.sandbox.run(
            name: context.jobID, command: [cargo] + (try buildArguments()),
            environment: env, mounts: mounts, cancel: context.cancel
        ) { stream, line in
            if stream == .stdout, line.hasPrefix("{") {
                artifacts.consider(jsonLine: line)
            } else {
                context.log(stream, line)
            }
        }
        try check(result, what: "cargo build", limits: limits)
        guard !artifacts.overflowed else {
            throw BuildFailure.build(
                "cargo reported more than \(limits.maxArtifacts) artifacts (the most a build may ship); the rest were not kept",
                fix: "ship fewer files, or an archive of them")
        }

        // What cargo reported (sandbox paths under /build/out) is collected in the package phase.
        let reported = artifacts.files.map { ReportedArtifact.sandboxPath($0.0, name: $0.1) }
        guard !reported.isEmpty else {
            throw BuildFailure.build(
                "cargo build produced no executables or libraries (bin, cdylib, staticlib)",
                fix: "add a [[bin]] or a cdylib/staticlib target")
        }

        var deps = [
            toolchainDescriptor(name: "cargo", path: sysroot + "/bin/cargo", version: cargoVersion, cache: context.digestCache),
            toolchainDescriptor(name: "rustc", path: sysroot + "/bin/rustc", version: rustcVersion, cache: context.digestCache),
        ]
        var params = env.filter { ["CARGO_INCREMENTAL", "CARGO_PROFILE_RELEASE_CODEGEN_UNITS", "RUSTFLAGS", "SOURCE_DATE_EPOCH"].contains($0.key) }
        params["command"] = "cargo " + (try buildArguments()).joined(separator: " ")
        params["cargo"] = cargoVersion
        params["rustc"] = rustcVersion
        params["cargo_lock"] = lockOrigin ?? (generatedLock ? "generated offline by the worker" : "from the source")
        if vendorDirectory != nil { params["dependencies"] = dependencySource ?? "vendored (source replacement, read-only)" }
        if let dependencyOutcome {
            params["dependency_cache"] = dependencyOutcome.summary
            if let entry = dependencyOutcome.entry { deps.append(entry) }
        }
        return BuiltProject(
            buildType: BuildType.cargo, buildConfig: ["Cargo.lock"], artifacts: reported,
            internalParameters: params, resolvedDependencies: deps)
    }
}

extension CargoBuilder {
    /// The locked packages of a collected Cargo.lock as resolved dependencies.
    /// Third-party packages from Cargo.lock. A checksum becomes a digest only if it is one (64 hex
    /// characters): a directory source such as Debian's crates writes a sentence there ("Could not
    /// get crate checksum"), and there is no .crate file whose digest could stand in; such a
    /// dependency gets no digest and an annotation saying why.
    static func lockDependencies(_ text: String) -> [ResourceDescriptor] {
        CargoLock(text: text).dependencies.map {
            if let sum = $0.sha256, sum.utf8.count == 64, sum.utf8.allSatisfy({ ($0 >= 48 && $0 <= 57) || ($0 >= 97 && $0 <= 102) }) {
                return ResourceDescriptor(uri: $0.purl, digest: ["sha256": sum], annotations: ["source": $0.source])
            }
            return ResourceDescriptor(uri: $0.purl, annotations: ["source": $0.source, "digest": "none: Cargo.lock records no checksum for this package"])
        }
    }
}

/// Collects `compiler-artifact` messages for the project's own binaries and libraries. Anything in
/// the build can print lines of that shape (a proc-macro's stdout is rustc's, and rustc's reaches
/// cargo's): at most `limit` are kept, past it only `overflowed` is set, so the host-side worker's
/// memory does not grow with what a build prints (#29).
final class ArtifactCollector: Sendable {
    private let state = Mutex<(found: [(String, String)], names: Set<String>, overflowed: Bool)>(([], [], false))
    let limit: Int

    init(limit: Int) { self.limit = limit }

    var files: [(String, String)] { state.withLock { $0.found } }
    var overflowed: Bool { state.withLock { $0.overflowed } }

    func consider(jsonLine: String) {
        // Past the limit the job fails anyway: no more parsing or keeping.
        guard !overflowed, jsonLine.contains("compiler-artifact") else { return }
        guard let obj = try? JSONSerialization.jsonObject(with: Data(jsonLine.utf8)) as? [String: Any],
            obj["reason"] as? String == "compiler-artifact",
            let target = obj["target"] as? [String: Any], let kinds = target["kind"] as? [String]
        else { return }
        let packageID = obj["package_id"] as? String ?? ""
        // Only the project's own packages (path sources), not dependencies.
        guard packageID.hasPrefix("path+file://") || packageID.contains("(path+file://") else { return }
        var paths: [String] = []
        if kinds.contains("bin"), let exe = obj["executable"] as? String { paths.append(exe) }
        if kinds.contains(where: { ["cdylib", "staticlib", "dylib"].contains($0) }), let filenames = obj["filenames"] as? [String] {
            paths += filenames.filter { $0.hasSuffix(".so") || $0.hasSuffix(".a") || $0.hasSuffix(".dylib") }
        }
        state.withLock { s in
            for p in paths {
                let name = (p as NSString).lastPathComponent
                guard !s.names.contains(name) else { continue }
                guard s.found.count < limit else {
                    s.overflowed = true
                    return
                }
                s.names.insert(name)
                s.found.append((p, name))
            }
        }
    }
}

/// Keeps the last few lines of output for error messages.
final class LogTail: Sendable {
    private let lines = Mutex<[String]>([])
    func add(_ line: String) {
        lines.withLock {
            $0.append(line)
            if $0.count > 5 { $0.removeFirst() }
        }
    }
    var last: String { lines.withLock { $0.last(where: { !$0.isEmpty }) ?? "" } }
}
