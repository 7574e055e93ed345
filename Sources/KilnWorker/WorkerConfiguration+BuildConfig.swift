import KilnMessages

extension WorkerConfiguration {
    /// This build's limits: the worker's, narrowed by what the request's `build_config` asks for. A
    /// request for more than this worker may give (the gateway checks the farm's maxima; a worker may
    /// be configured tighter) is the farm's problem and fails before anything runs.
    func limits(for config: BuildConfig?) throws(BuildFailure) -> Limits {
        var limits = self.limits
        guard let config else { return limits }
        // Numbers from the bus: each in range before any arithmetic (a shift of an unchecked MiB count
        // could wrap to a small number and pass the comparison below).
        for (name, value) in [("vcpus", config.vcpus), ("memory_mib", config.memoryMiB), ("disk_mb", config.diskMB), ("timeout_s", config.timeoutSeconds)] {
            if let value, !(1...(1 << 30)).contains(value) {
                throw .farm(
                    "source", "build_config.\(name) is \(value), outside 1…\(1 << 30)", operatorAction: "check the gateway's --max-build-* limits", retryable: false)
            }
        }
        func refuse(_ what: String, _ asked: Int, _ allowed: Int64) -> BuildFailure {
            .farm(
                "source", "build_config.\(what) is \(asked) and this worker allows at most \(allowed)",
                operatorAction: "give workers at least what the gateway's --max-build-* allow", retryable: false)
        }
        if let mib = config.memoryMiB {
            let bytes = Int64(mib) << 20
            guard bytes <= limits.memoryBytes else { throw refuse("memory_mib", mib, limits.memoryBytes >> 20) }
            limits.memoryBytes = bytes
        }
        if let mb = config.diskMB {
            let bytes = Int64(mb) << 20
            guard bytes <= limits.diskBytes else { throw refuse("disk_mb", mb, limits.diskBytes >> 20) }
            limits.diskBytes = bytes
        }
        if let seconds = config.timeoutSeconds {
            let asked = Duration.seconds(seconds)
            guard asked <= limits.buildTimeout else { throw refuse("timeout_s", seconds, limits.buildTimeout.components.seconds) }
            limits.buildTimeout = asked
        }
        if let vcpus = config.vcpus {
            if limits.cpuQuota > 0, Double(vcpus) > limits.cpuQuota { throw refuse("vcpus", vcpus, Int64(limits.cpuQuota)) }
            limits.cpuQuota = Double(vcpus)
        }
        if config.internetAccess == true {
            guard allowInternetBuilds else {
                throw .farm(
                    "source", "the build asks for internet access and this worker keeps builds offline",
                    operatorAction: "start workers with --allow-internet-builds if the farm allows such builds", retryable: false)
            }
            limits.network = true
        }
        return limits
    }
}
