import Crypto
import Foundation
import KilnAttestation
import KilnTestSupport
import Testing

/// #28 item 2: ripgrep 13 — Debian's source package, its dependencies from Debian's crate set served as
/// a registry through kiln-fetch — builds on a process worker and in a fresh VM, and the two `rg` are
/// byte-identical: reproducibility across isolation kinds.
///
/// Opt-in (`KILN_RIPGREP_SOURCE=DIR`, made by `scripts/fetch-ripgrep.sh`): under TCG, the only
/// accelerator on machines whose KVM is nested, one ripgrep build in a one-vCPU VM takes far longer than
/// a CI run may (see docs/vm-workers.md for the figures). `KILN_RIPGREP_VM_BUILDS` (default 3) and
/// `KILN_RIPGREP_PROCESS_BUILDS` (default 2) set how many; `KILN_RIPGREP_VM_CPUS` the guest's vCPUs.
///
/// ripgrep's lock pins unicode-linebreak 0.1.4, whose build script lays out a table through a randomly
/// seeded `HashMap`: now and then two builds of the same inputs differ there, and the farm cannot pin it.
/// The lock is kept on that version on purpose: whenever two `rg` differ, the rebuild comparison must
/// name that crate and nothing else.
extension WorkerVMTests {
    static let ripgrepSource = ProcessInfo.processInfo.environment["KILN_RIPGREP_SOURCE"]

    static func count(_ name: String, default value: Int) -> Int {
        ProcessInfo.processInfo.environment[name].flatMap(Int.init).map { max(0, min($0, 20)) } ?? value
    }

    @Test(.enabled(if: ripgrepSource != nil, "set KILN_RIPGREP_SOURCE (scripts/fetch-ripgrep.sh) to build ripgrep in VMs"))
    func ripgrepBuildsByteIdenticalOnAProcessWorkerAndInAVM() async throws {
        let source = try #require(Self.ripgrepSource)
        let processBuilds = Self.count("KILN_RIPGREP_PROCESS_BUILDS", default: 2)
        let vmBuilds = Self.count("KILN_RIPGREP_VM_BUILDS", default: 3)
        let vcpus = Self.count("KILN_RIPGREP_VM_CPUS", default: 1)
        try #require(processBuilds >= 1 && processBuilds + vmBuilds >= 2)
        let dir = try TemporaryDirectory(prefix: "kiln-ripgrep")
        let registry = try await CrateRegistryFixture.debian()
        defer { registry.stop() }
        // The upstream lock names crates.io's versions and checksums, which Debian's set does not have:
        // the first build resolves a lock through the farm, and every later build uses that lock.
        // Debian's grep crate has no `simd-accel` feature (packed_simd is not packaged), and cargo
        // refuses a manifest naming a feature its dependency lacks: that feature line goes too.
        let project = dir.file("ripgrep")
        _ = try await Command.run(
            "/bin/sh",
            [
                "-c", "cp -r \"$0\" \"$1\" && rm -rf \"$1/debian\" \"$1/.pc\" \"$1/Cargo.lock\" && sed -i '/^simd-accel = /d' \"$1/Cargo.toml\"",
                source, project,
            ])

        // Each rg against those before it as it arrives (a long run shows its figures as it goes): the
        // same bytes as an earlier one, or a difference that starts in unicode-linebreak's table and is
        // named so by the rebuild comparison (one table laid out differently moves everything after it:
        // dozens of crates differ by the addresses they hold, one is the cause).
        var seen: [(n: Int, isolation: String, rg: Data)] = []
        var crossIsolationIdentical = 0
        func record(_ isolation: String, _ result: String, _ started: ContinuousClock.Instant) async throws {
            let rg = try Data(contentsOf: URL(fileURLWithPath: try await extract("artifacts/rg", from: result, into: dir)))
            let n = seen.count
            let digest = SHA256.hash(data: rg).map { String(format: "%02x", $0) }.joined()
            print("ripgrep #\(n) on a \(isolation) worker: submit to verified result \(ContinuousClock.now - started), rg sha256 \(digest)")
            defer { seen.append((n, isolation, rg)) }
            if let same = seen.first(where: { $0.rg == rg }) {
                print("rg #\(n) (\(isolation)) is byte-identical to #\(same.n) (\(same.isolation))")
                if seen.contains(where: { $0.rg == rg && $0.isolation != isolation }) { crossIsolationIdentical += 1 }
                return
            }
            guard let first = seen.first else { return }
            let diff = try #require(ELFSymbolDiff.compare(original: [UInt8](first.rg), rebuilt: [UInt8](rg)), "rg #\(n) differs and is not ELF")
            print(
                "rg #\(n) (\(isolation)) differs from #0: likely cause \(diff.causeCrates), first in \(diff.firstDifferenceSymbol ?? "-"), "
                    + "\(diff.crates.count) crates differ, resized \(diff.resizedSymbols.prefix(4))")
            #expect(diff.causeCrates == ["unicode_linebreak"], "rg #\(n) (\(isolation)) differs from #0 (\(first.isolation)) beyond unicode-linebreak: \(diff)")
        }

        // `count` builds on `farm` with a kiln-fetch of its own; each verified with only the farm key and
        // its provenance naming `isolation`; `after` sees each result.
        func builds(
            _ count: Int, on farm: CertifyingFarm, isolation: String, label: String, timeout: Duration, after: (Int, String) async throws -> Void = { _, _ in }
        ) async throws {
            let fetch = try await FetchServiceProcess(
                broker: "kiln://fetch:change-me-fetch@127.0.0.1:\(farm.broker.port)", state: dir.file("fetch-\(isolation)"), registry: registry.indexURL,
                unstamped: false)
            defer { fetch.stop() }
            for n in 0..<count {
                let started = ContinuousClock.now
                let result = try await farm.build(directory: project, name: "rg-\(isolation)-\(n)", nonce: WorkerCertificationTests.nonce, timeout: timeout)
                let (status, report, text) = try await farm.verify(result, nonce: WorkerCertificationTests.nonce)
                #expect(status == 0 && report?["key_trust"] as? String == "farm-certified", "\(text)")
                let provenance = try await Command.run("/usr/bin/tar", ["-xzOf", result, "provenance.json"]).replacingOccurrences(of: " ", with: "")
                #expect(provenance.contains("\"isolation\":\"\(isolation)\""))
                try await record(label, result, started)
                try await after(n, result)
            }
        }

        // Process workers (the development mode), certified like VM workers. Every build compiles all
        // of ripgrep itself (no compiled-dependency cache): the test compares isolations, not the cache.
        do {
            let farm = try await CertifyingFarm.start(
                dir: try TemporaryDirectory(prefix: "kiln-ripgrep-process"), maxWorkers: 1,
                poolArguments: ["--worker-args=--certified-key --dependency-cache off"])
            defer { farm.stop() }
            try await builds(processBuilds, on: farm, isolation: "process", label: "process", timeout: .seconds(3600)) { n, result in
                guard n == 0 else { return }
                let lock = try await Command.run("/usr/bin/tar", ["-xzOf", result, "build-config/Cargo.lock"])
                #expect(lock.contains("name = \"unicode-linebreak\"\nversion = \"0.1.4\""), "the lock keeps unicode-linebreak 0.1.4")
                try lock.write(toFile: project + "/Cargo.lock", atomically: true, encoding: .utf8)
            }
        }

        // Fresh VMs, one per build, the same source and lock.
        if vmBuilds > 0 {
            _ = try await Self.buildImage(into: dir.file("image"))
            let launch =
                "\(Self.root)/launch-vm.sh --image \(dir.file("image")) --id {id} --broker {broker} --accel tcg --deadline 21600 --toolchain host"
                + " --memory 8192 --cpus \(vcpus)"
            var environment = ProcessInfo.processInfo.environment
            environment["KILN_WORKER_ARGS"] = "--build-timeout 21000 --dependency-cache off"
            let farm = try await CertifyingFarm.start(
                dir: try TemporaryDirectory(prefix: "kiln-ripgrep-vm"), launch: launch, maxWorkers: 1,
                poolArguments: ["--vm-image", dir.file("image/image.json"), "--boot-timeout", "300"], poolEnvironment: environment)
            defer { farm.stop() }
            try await builds(vmBuilds, on: farm, isolation: "vm-tcg", label: "VM (TCG, \(vcpus) vCPU)", timeout: .seconds(21600))
        }
        #expect(seen.count == processBuilds + vmBuilds)
        print("ripgrep: \(seen.count) builds, \(Set(seen.map(\.rg)).count) distinct rg, \(crossIsolationIdentical) VM build(s) byte-identical to a process worker's")
    }

    /// Extracts one member of a result archive into a fresh file under `dir`; returns its path.
    private func extract(_ member: String, from archive: String, into dir: TemporaryDirectory) async throws -> String {
        let out = dir.file("extract-\(UUID().uuidString)")
        try FileManager.default.createDirectory(atPath: out, withIntermediateDirectories: true)
        _ = try await Command.run("/usr/bin/tar", ["-xzf", archive, "-C", out, member])
        return out + "/" + member
    }
}
