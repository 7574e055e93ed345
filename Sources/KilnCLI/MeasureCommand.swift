import ArgumentParser
import Foundation
import KilnCore
import KilnTEE

/// `kiln measure`: the SEV-SNP launch measurement a VM booted from these parts will report, so a
/// user can pin it with `kiln verify --expect-measurement` without trusting the farm's word for it.
struct MeasureCommand: ParsableCommand {
    static let configuration = CommandConfiguration(
        commandName: "measure",
        abstract: "Compute the SEV-SNP launch measurement of a direct-boot QEMU guest (firmware, kernel, initrd, command line).",
        discussion: """
            The firmware must be an OVMF AmdSev build (kernel-hashes=on: it carries the SEV hashes table); QEMU is \
            assumed, with -cpu EPYC-v4 unless --cpu-family/--cpu-model/--cpu-stepping say otherwise. \
            cluster/vm/build-image.sh runs this for the image's kernel, initramfs and launch-vm.sh's command line.
            """)

    @Option(help: "OVMF firmware built for SEV-SNP (OvmfPkg/AmdSev).") var firmware: String
    @Option(help: "The kernel QEMU boots (-kernel).") var kernel: String
    @Option(help: "The initramfs (-initrd); empty when none.") var initrd: String?
    @Option(help: "The kernel command line (-append), exactly.") var append: String = ""
    @Option(help: "vCPUs (-smp).") var vcpus: Int = 1
    @Option(help: "SEV_FEATURES of the guest, e.g. 0x1 (SNP) or 0x21 (SNP + debug swap); hex.") var guestFeatures: String = "0x1"
    @Option(help: "CPU family of the vCPU model.") var cpuFamily: UInt32 = 23
    @Option(help: "CPU model.") var cpuModel: UInt32 = 1
    @Option(help: "CPU stepping.") var cpuStepping: UInt32 = 2
    @Flag(help: "Print JSON with the inputs' digests beside the measurement.") var json = false

    func run() throws {
        func read(_ path: String, _ what: String) throws -> [UInt8] {
            guard let data = FileManager.default.contents(atPath: path) else { throw ValidationError("cannot read the \(what) \(path)") }
            return Array(data)
        }
        guard (1...512).contains(vcpus) else { throw ValidationError("--vcpus must be 1 to 512") }
        let featureText = guestFeatures.hasPrefix("0x") ? String(guestFeatures.dropFirst(2)) : guestFeatures
        guard let features = UInt64(featureText, radix: 16) else { throw ValidationError("--guest-features must be hex, e.g. 0x1") }
        let firmwareBytes = try read(firmware, "firmware")
        let kernelBytes = try read(kernel, "kernel")
        let initrdBytes = try initrd.map { try read($0, "initrd") } ?? []
        let parsed: SEVSNPLaunchDigest.Firmware
        do { parsed = try SEVSNPLaunchDigest.Firmware(bytes: firmwareBytes) } catch { throw ValidationError("\(firmware): \(error)") }
        let measurement: [UInt8]
        do {
            measurement = try SEVSNPLaunchDigest.compute(
                firmware: parsed, kernel: kernelBytes, initrd: initrdBytes, commandLine: append, vcpus: vcpus,
                cpuSignature: SEVSNPLaunchDigest.cpuSignature(family: cpuFamily, model: cpuModel, stepping: cpuStepping), guestFeatures: features)
        } catch {
            throw ValidationError("cannot measure: \(error)")
        }
        guard json else {
            print(measurement.hexString)
            return
        }
        let document: [String: Any] = [
            "tee": "sev-snp", "measurement": measurement.hexString, "command_line": append, "vcpus": vcpus,
            "guest_features": "0x" + String(features, radix: 16),
            "cpu_signature": "0x" + String(SEVSNPLaunchDigest.cpuSignature(family: cpuFamily, model: cpuModel, stepping: cpuStepping), radix: 16),
            "firmware_sha384_pages": parsed.digest.hexString,
        ]
        let data = try JSONSerialization.data(withJSONObject: document, options: [.sortedKeys])
        print(String(decoding: data, as: UTF8.self))
    }
}
