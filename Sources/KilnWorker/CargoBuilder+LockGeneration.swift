import Foundation
import KilnProcess
import Synchronization

extension CargoBuilder {
    /// Port `socat` listens on inside the sandbox's own network namespace (nothing else is there).
    static let relayPort = 7878
    static let relayMountPath = "/build/index-relay"

    /// Generates `Cargo.lock` in the source tree: `cargo generate-lockfile` in the sandbox, with no
    /// network but a loopback port that `socat` forwards to the worker's `RegistryIndexRelay`, which
    /// serves the registry's index files and nothing else. The build later runs `--locked` against it,
    /// and the fetch phase checks every crate it pins against the registry as for a committed lock.
    func generateLock(_ context: BuildContext, fetch: FetchClient, relayDirectory: String) async throws {
        guard FileManager.default.isExecutableFile(atPath: "/usr/bin/socat") else {
            throw BuildFailure.farm(
                "fetch", "Cargo.lock is missing and this worker cannot resolve one (socat is not installed)",
                operatorAction: "install socat on the workers (scripts/install-deps.sh does)", retryable: true)
        }
        let fm = FileManager.default
        // A leftover from an earlier attempt, if any; absent is the state wanted.
        try? fm.removeItem(atPath: relayDirectory)
        try fm.createDirectory(atPath: relayDirectory, withIntermediateDirectories: true, attributes: [.posixPermissions: 0o755])
        // A leftover from an earlier attempt, if any; absent is the state wanted.
        defer { try? fm.removeItem(atPath: relayDirectory) }
        // A build granted network (build_config.internet_access) shares the host's network namespace:
        // its relay port is on the host's loopback then, so it is left to the fetch service alone.
        guard !context.sandbox.limits.network else {
            throw BuildFailure(
                phase: "fetch", message: "Cargo.lock is missing and this build has network access: the worker resolves locks only in a sandbox without network",
                suggestedAction: "commit Cargo.lock, or build without internet_access")
        }
        let home = context.outputDirectory + "/lock-home"
        try fm.createDirectory(atPath: home, withIntermediateDirectories: true)
        try """
        [source.crates-io]
        replace-with = "kiln-index-relay"

        [source.kiln-index-relay]
        registry = "sparse+http://127.0.0.1:\(Self.relayPort)/"

        """.write(toFile: home + "/config.toml", atomically: true, encoding: .utf8)
        if let user = context.sandbox.buildUser {
            chown(home, user.uid, user.gid)
            chown(home + "/config.toml", user.uid, user.gid)
        }
        var environment = environment(epoch: context.sourceDateEpoch)
        environment["CARGO_NET_OFFLINE"] = "false"
        environment["CARGO_HOME"] = Sandbox.outputPath + "/lock-home"
        var mounts = Sandbox.Mounts(source: context.sourceRoot, output: context.outputDirectory)
        mounts.readOnly.append((sysroot, Self.toolchainPath))
        mounts.readOnly.append((relayDirectory, Self.relayMountPath))
        // socat listens on the sandbox's loopback and forwards each connection to the relay's socket;
        // cargo starts once the port answers.
        let script = """
            socat TCP-LISTEN:\(Self.relayPort),bind=127.0.0.1,reuseaddr,fork UNIX-CONNECT:\(Self.relayMountPath)/index.sock & \
            i=0; until socat -u OPEN:/dev/null TCP:127.0.0.1:\(Self.relayPort) 2>/dev/null; do \
            i=$((i+1)); [ $i -gt 200 ] && { echo "the index relay did not come up" >&2; exit 97; }; sleep 0.05; done; \
            exec "$@"
            """
        let command = ["/bin/sh", "-c", script, "sh", "\(Self.toolchainPath)/bin/cargo", "generate-lockfile"]
        let relay = try await RegistryIndexRelay.bind(socketPath: relayDirectory + "/index.sock", fetch: fetch)
        let tail = LogTail()
        let firstError = Mutex<String?>(nil)
        let (lockEnvironment, lockMounts) = (environment, mounts)
        let result = try await relay.serve {
            try await context.sandbox.run(
                name: context.jobID + "-lock", command: command,
                environment: lockEnvironment, mounts: lockMounts, cancel: context.cancel
            ) { stream, line in
                tail.add(line)
                if line.hasPrefix("error: ") { firstError.withLock { if $0 == nil { $0 = String(line.dropFirst(7)) } } }
                context.log(stream, line)
            }
        }
        if result.process.cancelled { throw BuildCancelled() }
        let served = relay.served
        context.log(.stderr, "[kiln] index relay: \(served.requests) requests, \(served.bytes) bytes, \(served.notFound) not found")
        guard result.process.succeeded else {
            if let upstream = relay.firstUpstreamFailure {
                throw BuildFailure.farm(
                    "fetch", "Cargo.lock is missing and the registry could not be read to resolve it: \(upstream.description)",
                    operatorAction: "check kiln-fetch and its --cargo-registry", retryable: upstream.retryable)
            }
            if served.refused > 0 {
                throw BuildFailure(
                    phase: "fetch", message: "resolving Cargo.lock asked the registry for more than the worker's relay allows",
                    suggestedAction: "commit Cargo.lock")
            }
            throw BuildFailure(
                phase: "fetch", message: "Cargo.lock is missing and cargo could not resolve one from the registry: \(firstError.withLock { $0 } ?? tail.last)",
                suggestedAction: "fix the dependencies cargo names (or commit Cargo.lock)")
        }
    }
}
