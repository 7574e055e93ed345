import KilnBusClient
import KilnMessages
import Testing

@testable import KilnWorker

/// build_config numbers arrive over the bus: range-checked before they are shifted into bytes.
@Suite struct BuildLimitsTests {
    let configuration = WorkerConfiguration(bus: .init(host: "127.0.0.1", port: 1), workerID: "w", scratchDirectory: "/tmp/x", keyFile: "/tmp/k")

    @Test func aMemoryCountThatWouldWrapWhenShiftedIsRefused() {
        // Int.max >> 19 << 20 wraps; unchecked, it would compare as a small (or negative) byte count.
        for asked in [Int.max, Int.max >> 19, 0, -1] {
            #expect(throws: BuildFailure.self, "\(asked)") { try configuration.limits(for: BuildConfig(memoryMiB: asked)) }
        }
        #expect(throws: BuildFailure.self) { try configuration.limits(for: BuildConfig(timeoutSeconds: Int.max)) }
    }

    @Test func aRequestWithinTheWorkersLimitsNarrowsThem() throws {
        let limits = try configuration.limits(for: BuildConfig(vcpus: 1, memoryMiB: 512, diskMB: 1024, timeoutSeconds: 60))
        #expect(limits.memoryBytes == 512 << 20 && limits.diskBytes == 1024 << 20 && limits.cpuQuota == 1 && limits.buildTimeout == .seconds(60))
    }
}
