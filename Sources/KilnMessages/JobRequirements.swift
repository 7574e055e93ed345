/// What a request needs of the worker that builds it, beyond what every worker has: a toolchain its
/// options imply, a Rust target, network, resources. Empty for most builds (any worker will do, and
/// they go to the workers' queue group); otherwise the gateway offers the job only to workers whose
/// `WorkerReady` satisfies it, and fails it when no worker on the farm ever could.
public struct JobRequirements: Sendable, Equatable {
    public var toolchain: String?
    public var target: String?
    public var internetAccess = false
    public var vcpus: Int?
    public var memoryMiB: Int?
    public var diskMB: Int?
    public var timeoutSeconds: Int?

    public init() {}

    public init(_ request: BuildRequest) {
        self.init(buildConfig: request.buildConfig, buildOptions: request.buildOptions)
    }

    public init(buildConfig: BuildConfig?, buildOptions: BuildOptions?) {
        let o = buildOptions ?? BuildOptions()
        if o.attribute != nil {
            toolchain = "nix"
        } else if o.features != nil || o.noDefaultFeatures != nil || o.package != nil || o.bin != nil || o.target != nil || o.profile != nil {
            toolchain = "cargo"
        }
        target = o.target
        let c = buildConfig ?? BuildConfig()
        internetAccess = c.internetAccess == true
        vcpus = c.vcpus
        memoryMiB = c.memoryMiB
        diskMB = c.diskMB
        timeoutSeconds = c.timeoutSeconds
    }

    public var isEmpty: Bool { self == JobRequirements() }

    /// What `worker` lacks of these requirements (empty when it can build the job).
    public func unmet(by worker: WorkerReady) -> [String] {
        var missing: [String] = []
        if let toolchain, !worker.toolchains.contains(toolchain) { missing.append("the \(toolchain) toolchain") }
        if let target, !(worker.targets ?? []).contains(target) { missing.append("the Rust target \(target)") }
        if internetAccess && worker.internetAccess != true { missing.append("network for builds (internet_access)") }
        let limits = worker.limits ?? BuildConfig()
        func over(_ asked: Int?, _ offered: Int?, _ name: String) {
            if let asked, let offered, asked > offered { missing.append("\(name) \(asked) (it gives at most \(offered))") }
        }
        over(vcpus, limits.vcpus, "vcpus")
        over(memoryMiB, limits.memoryMiB, "memory_mib")
        over(diskMB, limits.diskMB, "disk_mb")
        over(timeoutSeconds, limits.timeoutSeconds, "timeout_s")
        return missing
    }
}
