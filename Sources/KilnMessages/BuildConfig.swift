/// The resources a build asks for (`build_config` in `POST /build`, as in the Nullspace template-build
/// API): checked by the gateway against the operator's maxima, enforced by the worker (cgroup CPU and
/// memory, the workspace's size, the build's wall clock), echoed on the job and signed into provenance.
public struct BuildConfig: Codable, Sendable, Equatable {
    public var vcpus: Int?
    public var memoryMiB: Int?
    public var diskMB: Int?
    public var timeoutSeconds: Int?
    /// Network for the build phase. Off unless asked for and allowed by the operator; a build with it
    /// is not hermetic, and provenance and `kiln verify` say so.
    public var internetAccess: Bool?

    public init(vcpus: Int? = nil, memoryMiB: Int? = nil, diskMB: Int? = nil, timeoutSeconds: Int? = nil, internetAccess: Bool? = nil) {
        self.vcpus = vcpus
        self.memoryMiB = memoryMiB
        self.diskMB = diskMB
        self.timeoutSeconds = timeoutSeconds
        self.internetAccess = internetAccess
    }

    enum CodingKeys: String, CodingKey {
        case vcpus
        case memoryMiB = "memory_mib"
        case diskMB = "disk_mb"
        case timeoutSeconds = "timeout_s"
        case internetAccess = "internet_access"
    }

    /// The most an operator lets a build ask for.
    public struct Maxima: Sendable, Equatable {
        public var vcpus = 64
        public var memoryMiB = 64 << 10
        public var diskMB = 200 << 10
        public var timeoutSeconds = 6 * 3600
        public var internetAccess = false
        public init() {}
    }

    /// Nil when within `maxima`; otherwise what is wrong, naming the limit.
    public func violation(of maxima: Maxima) -> String? {
        func check(_ value: Int?, _ name: String, _ max: Int) -> String? {
            guard let value else { return nil }
            if value < 1 { return "build_config.\(name) must be at least 1" }
            if value > max { return "build_config.\(name) is \(value); this farm allows at most \(max)" }
            return nil
        }
        if let v = check(vcpus, "vcpus", maxima.vcpus) ?? check(memoryMiB, "memory_mib", maxima.memoryMiB) ?? check(diskMB, "disk_mb", maxima.diskMB)
            ?? check(timeoutSeconds, "timeout_s", maxima.timeoutSeconds)
        {
            return v
        }
        if internetAccess == true && !maxima.internetAccess {
            return "build_config.internet_access is not allowed on this farm (builds are offline here)"
        }
        return nil
    }
}
