import Foundation
import KilnMessages
import Testing

@testable import KilnCoordination
@testable import KilnGateway

/// Dispatch by capability (#13 item 5), decided without a bus.
@Suite struct WorkerDirectoryTests {
    let t0 = Date(timeIntervalSince1970: 1_796_205_600)

    func worker(_ id: String, toolchains: [String] = ["cargo"], targets: [String] = ["x86_64-unknown-linux-gnu"], internet: Bool = false, memoryMiB: Int = 8192)
        -> WorkerReady
    {
        WorkerReady(
            workerID: id, toolchains: toolchains, arch: "x86_64", targets: targets, internetAccess: internet,
            limits: BuildConfig(vcpus: 2, memoryMiB: memoryMiB, diskMB: 10240, timeoutSeconds: 1800))
    }

    @Test func requirementsComeFromTheRequestsOptionsAndConfig() {
        #expect(JobRequirements(buildConfig: nil, buildOptions: nil).isEmpty, "a plain build goes to the queue group")
        let cargo = JobRequirements(buildConfig: nil, buildOptions: BuildOptions(features: ["x"]))
        #expect(cargo.toolchain == "cargo")
        let nix = JobRequirements(buildConfig: nil, buildOptions: BuildOptions(attribute: "hello"))
        #expect(nix.toolchain == "nix")
        let net = JobRequirements(buildConfig: BuildConfig(memoryMiB: 1024, internetAccess: true), buildOptions: nil)
        #expect(net.internetAccess && net.memoryMiB == 1024 && net.toolchain == nil)
    }

    @Test func whatAWorkerLacksIsNamed() {
        let needs = JobRequirements(
            buildConfig: BuildConfig(memoryMiB: 16384, internetAccess: true), buildOptions: BuildOptions(target: "aarch64-unknown-linux-gnu"))
        let unmet = needs.unmet(by: worker("w1"))
        #expect(unmet == ["the Rust target aarch64-unknown-linux-gnu", "network for builds (internet_access)", "memory_mib 16384 (it gives at most 8192)"])
        #expect(needs.unmet(by: worker("w2", targets: ["aarch64-unknown-linux-gnu"], internet: true, memoryMiB: 32768)).isEmpty)
        #expect(JobRequirements(buildConfig: nil, buildOptions: BuildOptions(attribute: "a")).unmet(by: worker("w3")) == ["the nix toolchain"])
    }

    @Test func onlyIdleWorkersThatCanBuildItAreCandidatesLongestWaitingFirst() {
        var d = WorkerDirectory()
        d.announced(worker("plain"), at: t0)
        d.announced(worker("net-late", internet: true), at: t0 + 20)
        d.announced(worker("net-early", internet: true), at: t0 + 10)
        let needs = JobRequirements(buildConfig: BuildConfig(internetAccess: true), buildOptions: nil)
        #expect(d.candidates(for: needs, now: t0 + 30) == ["net-early", "net-late"])
        d.busy("net-early")
        d.unavailable("net-late")
        #expect(d.candidates(for: needs, now: t0 + 30).isEmpty)
        #expect(d.impossibility(of: needs, now: t0 + 30) == nil, "workers like those were seen: wait for the next one")
    }

    @Test func aJobNoWorkerSeenLatelyCouldBuildIsImpossibleButOnlyOnceWorkersWereSeen() {
        var d = WorkerDirectory()
        let needs = JobRequirements(buildConfig: nil, buildOptions: BuildOptions(target: "riscv64gc-unknown-none-elf"))
        #expect(d.impossibility(of: needs, now: t0) == nil, "a gateway that just started knows no workers yet")
        d.announced(worker("a"), at: t0)
        d.announced(worker("b"), at: t0)
        let why = d.impossibility(of: needs, now: t0 + 1)
        #expect(why == "no worker on this farm can build it: the 2 seen lately lack the Rust target riscv64gc-unknown-none-elf", "\(why ?? "")")
        // Announcements are forgotten after `memory`: then nothing is known again.
        d.expire(now: t0 + d.memory + 1)
        #expect(d.entries.isEmpty && d.impossibility(of: needs, now: t0 + d.memory + 1) == nil)
    }

    @Test func announcementsAreBoundedAndChecked() {
        var d = WorkerDirectory()
        d.capacity = 3
        for i in 0..<5 { d.announced(worker("w\(i)"), at: t0 + Double(i)) }
        #expect(d.entries.count == 3 && d.entries["w0"] == nil && d.entries["w4"] != nil, "the oldest go first")
        #expect(!WorkerDirectory.isWellFormed(worker("bad.id")), "a worker id must be a subject token")
        #expect(!WorkerDirectory.isWellFormed(worker("w", toolchains: Array(repeating: "cargo", count: 17))))
        // The isolation a worker announces is kept with it: a megabyte of it is refused, not stored.
        var huge = worker("w")
        huge.isolation = String(repeating: "x", count: 1 << 20)
        #expect(!WorkerDirectory.isWellFormed(huge), "a megabyte of isolation")
        huge.isolation = "vm-tcg"
        #expect(WorkerDirectory.isWellFormed(huge))
    }
}
