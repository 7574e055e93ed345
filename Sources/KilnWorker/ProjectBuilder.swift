import Foundation
import KilnArchive
import KilnAttestation
import KilnProcess

/// What a builder needs from the pipeline.
public struct BuildContext: Sendable {
    /// Host path of the project root (mounted at /build/src). Builders never read beneath it by
    /// path: `sourceTree` is the confined view for the few checks they make.
    public var sourceRoot: String
    public var sourceTree: ConfinedDirectory
    /// Host path mounted at /build/out (targets, caches, out-links).
    public var outputDirectory: String
    /// Host path the builder copies artifacts into.
    public var artifactsDirectory: String
    public var sourceDateEpoch: Int64
    public var jobID: String
    public var sandbox: Sandbox
    public var cancel: CancelSwitch
    public var log: @Sendable (ProcessRunner.Stream, String) -> Void
    /// Remembers the toolchain binaries' digests across one-shot workers (nil: hash each time).
    public var digestCache: FileDigestCache? = nil
}

/// What a builder produced.
public struct BuiltProject: Sendable {
    public var buildType: String
    /// Files to ship under build-config/, relative to the source root (e.g. `Cargo.lock`); collected
    /// in the `package` phase through `ConfinedDirectory`, never read by the builder.
    public var buildConfig: [String]
    /// What the toolchain reported as outputs; collected the same way.
    public var artifacts: [ReportedArtifact]
    public var internalParameters: [String: String]
    public var resolvedDependencies: [ResourceDescriptor]
}

/// One implementation per toolchain.
public protocol ProjectBuilder: Sendable {
    func build(_ context: BuildContext) async throws -> BuiltProject
}

extension ProjectBuilder {
    /// Turns a sandbox outcome into the right failure (time limit, memory, processes, exit code).
    func check(_ outcome: Sandbox.Outcome, what: String, limits: WorkerConfiguration.Limits) throws {
        if outcome.process.cancelled { throw BuildCancelled() }
        if outcome.process.timedOut {
            throw BuildFailure.build(
                "\(what) exceeded the build time limit of \(limits.buildTimeout)", fix: "make the build faster or ask the operator for a longer limit")
        }
        if outcome.process.succeeded { return }
        if outcome.hitMemoryLimit {
            throw BuildFailure.build(
                "\(what) was stopped: the sandbox reached its memory limit of \(limits.memoryBytes >> 20) MiB (\(outcome.process.description))",
                fix: "reduce the build's memory use or ask the operator for a larger limit")
        }
        if outcome.hitProcessLimit {
            throw BuildFailure.build(
                "\(what) hit the sandbox's limit of \(limits.maxProcesses) processes (\(outcome.process.description))",
                fix: "do not spawn unbounded processes in build scripts")
        }
        throw BuildFailure.build("\(what) failed (\(outcome.process.description)); see the log for the compiler's output")
    }

    /// A toolchain binary as a resolved dependency (its digest pins the exact build).
    func toolchainDescriptor(name: String, path: String, version: String, cache: FileDigestCache?) -> ResourceDescriptor {
        // A binary that cannot be hashed is recorded without a digest, never with a wrong one.
        let digest = (try? cache.map { try $0.digest(of: path).0 } ?? FileDigest.of(file: path)).map { ["sha256": $0.sha256] }
        return ResourceDescriptor(name: name, uri: "file://" + path, digest: digest, annotations: ["version": version])
    }
}
