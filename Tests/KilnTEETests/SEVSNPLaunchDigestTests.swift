import Foundation
import KilnTEE
import Testing

/// The SEV-SNP launch measurement (#19 item 4), checked against the published values of
/// virtee/sev-snp-measure's test suite for the same firmware (Vectors/ovmf-amdsev-suffix.bin, the
/// last 4 KiB of an OVMF AmdSevX64 build, edk2-stable202405), one vCPU of QEMU's EPYC-v4.
@Suite struct SEVSNPLaunchDigestTests {
    static let firmwareBytes = TEEVectors.bytes("ovmf-amdsev-suffix.bin")
    static let firmwareDigest = "086e2e9149ebf45abdc3445fba5b2da8270bdbb04094d7a2c37faaa4b24af3aa16aff8c374c2a55c467a50da6d466b74"

    static func hex(_ b: [UInt8]) -> String { b.map { String(format: "%02x", $0) }.joined() }

    static func digest(commandLine: String, features: UInt64, seeded: Bool = false) throws -> String {
        let firmware = try SEVSNPLaunchDigest.Firmware(bytes: firmwareBytes)
        let seed = seeded ? Array(firmwareDigest.chunked()) : nil
        // sev-snp-measure's vectors pass /dev/null as kernel and initrd: both empty.
        return hex(
            try SEVSNPLaunchDigest.compute(
                firmware: firmware, firmwareDigest: seed, kernel: [], initrd: [], commandLine: commandLine, vcpus: 1, guestFeatures: features))
    }

    @Test func theFirmwareDigestAndItsDeclaredSections() throws {
        let firmware = try SEVSNPLaunchDigest.Firmware(bytes: Self.firmwareBytes)
        #expect(Self.hex(firmware.digest) == Self.firmwareDigest)
        #expect(firmware.sections.contains { $0.type == .kernelHashes && $0.size == 4096 })
        #expect(firmware.sections.contains { $0.type == .secrets } && firmware.sections.contains { $0.type == .cpuid })
        #expect(firmware.hashesTableGPA != nil && firmware.resetEIP != nil)
    }

    @Test func launchDigestsMatchThePublishedValues() throws {
        // Empty command line; SEV_FEATURES 0x21 (SNP + debug-swap, QEMU's default) and 0x1 (SNP only).
        #expect(
            try Self.digest(commandLine: "", features: 0x21, seeded: true)
                == "329c8ce0972ae52343b64d34a434a86f245dfd74f5ed7aae15d22efc78fb9683632b9b50e4e1d7fa41179ef98a7ef198")
        #expect(
            try Self.digest(commandLine: "", features: 0x1, seeded: true)
                == "ddc5224521617a536ee7ce9dd6224d1b58a8d4fda1c741f3ac99fc4bfa04ba6e9fc98646d4a07a9079397fa3852819b5")
        // The firmware measured page by page instead of seeded with its digest, and a command line.
        #expect(
            try Self.digest(commandLine: "console=ttyS0 loglevel=7", features: 0x21)
                == "803f691094946e42068aaa3a8f9e26a5c89f36f7b73ecfb28c653360fe4b3aba7e534442e7e1e17895dfe778d0228977")
        #expect(
            try Self.digest(commandLine: "console=ttyS0 loglevel=7", features: 0x1)
                == "6d287813eb5222d770f75005c664e34c204f385ce832cc2ce7d0d6f354454362f390ef83a92046c042e706363b4b08fa")
    }

    @Test func everyInputChangesTheDigest() throws {
        let firmware = try SEVSNPLaunchDigest.Firmware(bytes: Self.firmwareBytes)
        func d(kernel: [UInt8] = [1], initrd: [UInt8] = [2], line: String = "x", vcpus: Int = 1) throws -> [UInt8] {
            try SEVSNPLaunchDigest.compute(firmware: firmware, kernel: kernel, initrd: initrd, commandLine: line, vcpus: vcpus)
        }
        let base = try d()
        for other in [try d(kernel: [9]), try d(initrd: [9]), try d(line: "y"), try d(vcpus: 2)] { #expect(other != base) }
    }

    @Test func malformedFirmwareIsRefusedWithAReason() {
        #expect(throws: SEVSNPLaunchDigest.Error.self) { try SEVSNPLaunchDigest.Firmware(bytes: [UInt8](repeating: 0, count: 100)) }
        // A footer table whose size points before the start of the file.
        var lying = Self.firmwareBytes
        let footer = lying.count - 32 - 18
        lying[footer] = 0xff
        lying[footer + 1] = 0xff
        #expect(throws: SEVSNPLaunchDigest.Error.self) { try SEVSNPLaunchDigest.Firmware(bytes: lying) }
        // Plain OVMF (no SEV metadata) cannot measure a kernel.
        let plain = try! SEVSNPLaunchDigest.Firmware(bytes: [UInt8](repeating: 0, count: 4096))
        #expect(throws: SEVSNPLaunchDigest.Error.self) {
            try SEVSNPLaunchDigest.compute(firmware: plain, kernel: [1], initrd: [], commandLine: "", vcpus: 1)
        }
    }
}

extension String {
    /// Hex pairs → bytes.
    fileprivate func chunked() -> [UInt8] {
        var out: [UInt8] = []
        var i = startIndex
        while i < endIndex {
            let j = index(i, offsetBy: 2)
            out.append(UInt8(self[i..<j], radix: 16)!)
            i = j
        }
        return out
    }
}
