import Crypto

/// The SEV-SNP launch measurement of a QEMU guest booted directly from a kernel (#19 item 4): what
/// the `MEASUREMENT` field of every report from that VM must equal, computed offline from the
/// firmware, kernel, initramfs and command line, so that a verifier can pin it
/// (`kiln verify --expect-measurement`) without ever having seen the VM.
///
/// The firmware pages are measured as they are loaded (ending at 4 GiB); then each section the
/// firmware's SEV metadata declares: zero pages, the secrets and CPUID pages, and the page holding the
/// SEV hashes table with the SHA-256 of kernel, initrd and command line (QEMU's `kernel-hashes=on`,
/// which OVMF checks before it jumps to the kernel); then one VMSA (initial register state) per vCPU.
/// Every step extends the digest: `ld = SHA-384(PAGE_INFO(ld, SHA-384(contents), type, gpa))` (SNP
/// firmware ABI, SNP_LAUNCH_UPDATE). Only QEMU's register conventions are modelled; the algorithm and
/// its test vectors follow virtee/sev-snp-measure.
public struct SEVSNPLaunchDigest: Sendable {
    public struct Error: Swift.Error, Sendable, CustomStringConvertible {
        public let description: String
        init(_ d: String) { description = d }
    }

    /// What the firmware declares in its footer table (the last bytes before its reset vector).
    public struct Firmware: Sendable {
        public enum SectionType: UInt32, Sendable {
            case secureMemory = 1
            case secrets = 2
            case cpuid = 3
            case svsmCallingArea = 4
            case kernelHashes = 0x10
        }

        public struct Section: Sendable, Equatable {
            public var gpa: UInt64
            public var size: UInt64
            public var type: SectionType
        }

        public let bytes: [UInt8]
        public let sections: [Section]
        /// Where the firmware expects QEMU's SEV hashes table.
        public let hashesTableGPA: UInt64?
        /// The application processors' reset address (SEV-ES reset block).
        public let resetEIP: UInt32?
        /// The firmware is loaded so that it ends at 4 GiB.
        public var gpa: UInt64 { (1 << 32) - UInt64(bytes.count) }

        static let footerGUID = guid("96b582de-1fb2-45f7-baea-a366c55a082d")
        static let hashesTableGUID = guid("7255371f-3a3b-4b04-927b-1da6efa8d454")
        static let resetBlockGUID = guid("00f771de-1a7e-4fcb-890e-68c77e2fb44e")
        static let metadataGUID = guid("dc886566-984a-4798-a75e-5585a7bf67cc")

        public init(bytes: [UInt8]) throws(SEVSNPLaunchDigest.Error) {
            guard bytes.count >= 4096, bytes.count % 4096 == 0, bytes.count <= 64 << 20 else {
                throw .init("firmware must be a whole number of 4 KiB pages, at most 64 MiB (got \(bytes.count) bytes)")
            }
            self.bytes = bytes
            // The footer table ends 32 bytes before the end; each entry is `data ‖ u16 size ‖ GUID`,
            // read backwards from the footer's own entry.
            var table: [[UInt8]: ArraySlice<UInt8>] = [:]
            let footerStart = bytes.count - 32 - 18
            if Array(bytes[(footerStart + 2)..<(footerStart + 18)]) == Self.footerGUID {
                let tableSize = Int(le16(bytes, footerStart)) - 18
                guard tableSize >= 0, tableSize <= footerStart else { throw .init("firmware footer table size is out of range") }
                var end = footerStart
                let start = footerStart - tableSize
                while end - start >= 18 {
                    let size = Int(le16(bytes, end - 18))
                    guard size >= 18, end - size >= start else { throw .init("firmware footer table entry size is out of range") }
                    table[Array(bytes[(end - 16)..<end])] = bytes[(end - size)..<(end - 18)]
                    end -= size
                }
            }
            hashesTableGPA = table[Self.hashesTableGUID].flatMap { $0.count >= 4 ? UInt64(le32(Array($0), 0)) : nil }
            resetEIP = table[Self.resetBlockGUID].flatMap { $0.count >= 4 ? le32(Array($0), 0) : nil }
            var sections: [Section] = []
            if let entry = table[Self.metadataGUID], entry.count >= 4 {
                let offsetFromEnd = Int(le32(Array(entry), 0))
                guard offsetFromEnd <= bytes.count, offsetFromEnd >= 16 else { throw .init("SEV metadata offset is out of range") }
                let start = bytes.count - offsetFromEnd
                guard Array(bytes[start..<(start + 4)]) == Array("ASEV".utf8), le32(bytes, start + 8) == 1 else {
                    throw .init("SEV metadata has a wrong signature or version")
                }
                let count = Int(le32(bytes, start + 12))
                guard count <= 256, start + 16 + count * 12 <= bytes.count else { throw .init("SEV metadata item count is out of range") }
                for i in 0..<count {
                    let at = start + 16 + i * 12
                    guard let type = SectionType(rawValue: le32(bytes, at + 8)) else {
                        throw .init("unknown SEV metadata section type \(le32(bytes, at + 8))")
                    }
                    sections.append(Section(gpa: UInt64(le32(bytes, at)), size: UInt64(le32(bytes, at + 4)), type: type))
                }
            }
            self.sections = sections
        }

        /// The digest of the firmware pages alone: the starting point of every launch digest with
        /// this firmware (a verifier can be given it instead of the whole firmware).
        public var digest: [UInt8] {
            var context = SEVSNPLaunchDigest()
            context.measureNormalPages(gpa: gpa, bytes[...])
            return context.digest
        }
    }

    /// The running launch digest (48 bytes, SHA-384).
    public private(set) var digest: [UInt8]

    public init(seed: [UInt8] = [UInt8](repeating: 0, count: 48)) { digest = seed }

    /// QEMU's CPU signature for `-cpu EPYC-v4` (family 23, model 1, stepping 2), what launch-vm.sh uses.
    public static let epycV4Signature: UInt32 = cpuSignature(family: 23, model: 1, stepping: 2)

    /// CPUID Fn0000_0001_EAX for a family, model and stepping (AMD CPUID specification #25481).
    public static func cpuSignature(family: UInt32, model: UInt32, stepping: UInt32) -> UInt32 {
        let (familyLow, familyHigh) = family > 0xf ? (UInt32(0xf), (family - 0xf) & 0xff) : (family, 0)
        return familyHigh << 20 | ((model >> 4) & 0xf) << 16 | familyLow << 8 | (model & 0xf) << 4 | (stepping & 0xf)
    }

    /// The launch digest of a direct-boot guest: `firmwareDigest` (`Firmware.digest`) seeds it when
    /// given, the firmware's own pages otherwise.
    public static func compute(
        firmware: Firmware, firmwareDigest: [UInt8]? = nil, kernel: [UInt8]?, initrd: [UInt8], commandLine: String, vcpus: Int,
        cpuSignature: UInt32 = epycV4Signature, guestFeatures: UInt64 = 0x1
    ) throws(Error) -> [UInt8] {
        guard vcpus >= 1, vcpus <= 512 else { throw .init("vcpus must be 1 to 512") }
        var context: SEVSNPLaunchDigest
        if let firmwareDigest {
            guard firmwareDigest.count == 48 else { throw .init("a firmware digest is 48 bytes (SHA-384)") }
            context = SEVSNPLaunchDigest(seed: firmwareDigest)
        } else {
            context = SEVSNPLaunchDigest()
            context.measureNormalPages(gpa: firmware.gpa, firmware.bytes[...])
        }
        for section in firmware.sections {
            guard section.size % 4096 == 0, section.gpa % 4096 == 0 else { throw .init("SEV metadata section is not page-aligned") }
            switch section.type {
            case .secureMemory, .svsmCallingArea: context.measureZeroPages(gpa: section.gpa, size: section.size)
            case .secrets: context.update(type: 5, gpa: section.gpa, contents: zeros48)
            case .cpuid: context.update(type: 6, gpa: section.gpa, contents: zeros48)
            case .kernelHashes:
                guard let kernel else {
                    context.measureZeroPages(gpa: section.gpa, size: section.size)
                    continue
                }
                guard let tableGPA = firmware.hashesTableGPA, section.size == 4096 else {
                    throw .init("the firmware declares a kernel hashes section but no usable SEV hashes table")
                }
                var page = [UInt8](repeating: 0, count: 4096)
                let table = hashesTable(kernel: kernel, initrd: initrd, commandLine: commandLine)
                let offset = Int(tableGPA & 0xfff)
                guard offset + table.count <= 4096 else { throw .init("the SEV hashes table does not fit its page") }
                page.replaceSubrange(offset..<(offset + table.count), with: table)
                context.measureNormalPages(gpa: section.gpa, page[...])
            }
        }
        if kernel != nil, !firmware.sections.contains(where: { $0.type == .kernelHashes }) {
            throw .init("a kernel is measured, but the firmware has no kernel hashes section (not an OVMF AmdSev build)")
        }
        let bsp = vmsa(eip: 0xffff_fff0, cpuSignature: cpuSignature, guestFeatures: guestFeatures)
        let ap = firmware.resetEIP.map { vmsa(eip: $0, cpuSignature: cpuSignature, guestFeatures: guestFeatures) }
        for cpu in 0..<vcpus {
            guard cpu == 0 || ap != nil else { throw .init("more than one vCPU, but the firmware has no SEV-ES reset block") }
            context.update(type: 2, gpa: 0xFFFF_FFFF_F000, contents: Array(SHA384.hash(data: cpu == 0 ? bsp : ap!)))
        }
        return context.digest
    }

    // MARK: - Pages

    static let zeros48 = [UInt8](repeating: 0, count: 48)

    /// One SNP_LAUNCH_UPDATE: the PAGE_INFO structure (SNP firmware ABI, Table 67) hashed into the digest.
    mutating func update(type: UInt8, gpa: UInt64, contents: [UInt8]) {
        var info = digest + contents
        info += [0x70, 0x00, type, 0, 0, 0, 0, 0]
        withUnsafeBytes(of: gpa.littleEndian) { info += $0 }
        digest = Array(SHA384.hash(data: info))
    }

    mutating func measureNormalPages(gpa: UInt64, _ data: ArraySlice<UInt8>) {
        var offset = 0
        while offset < data.count {
            let page = data[(data.startIndex + offset)..<(data.startIndex + offset + 4096)]
            update(type: 1, gpa: gpa + UInt64(offset), contents: Array(SHA384.hash(data: page)))
            offset += 4096
        }
    }

    mutating func measureZeroPages(gpa: UInt64, size: UInt64) {
        var offset: UInt64 = 0
        while offset < size {
            update(type: 3, gpa: gpa + offset, contents: Self.zeros48)
            offset += 4096
        }
    }

    // MARK: - What QEMU writes

    /// QEMU's SEV hashes table (padded to 16 bytes): header GUID, length, then command line (with its
    /// NUL), initrd and kernel entries, each `GUID ‖ u16 length ‖ SHA-256`.
    static func hashesTable(kernel: [UInt8], initrd: [UInt8], commandLine: String) -> [UInt8] {
        func entry(_ guidText: String, _ digest: SHA256.Digest) -> [UInt8] { guid(guidText) + [50, 0] + Array(digest) }
        let body =
            entry("97d02dd8-bd20-4c94-aa78-e7714d36ab2a", SHA256.hash(data: Array(commandLine.utf8) + [0]))
            + entry("44baf731-3a2f-4bd7-9af1-41e29169781d", SHA256.hash(data: initrd))
            + entry("4de79437-abd2-427f-b835-d5b172d2045b", SHA256.hash(data: kernel))
        let length = 18 + body.count
        let table = guid("9438d606-4f22-4cc9-b479-a793d411fd21") + [UInt8(length & 0xff), UInt8(length >> 8)] + body
        return table + [UInt8](repeating: 0, count: (16 - table.count % 16) % 16)
    }

    /// The initial register state of a vCPU as QEMU/KVM sets it (AMD APM vol. 2, VMSA layout).
    static func vmsa(eip: UInt32, cpuSignature: UInt32, guestFeatures: UInt64) -> [UInt8] {
        var page = [UInt8](repeating: 0, count: 4096)
        func put<T: FixedWidthInteger>(_ value: T, at offset: Int) {
            withUnsafeBytes(of: value.littleEndian) { page.replaceSubrange(offset..<(offset + $0.count), with: $0) }
        }
        func segment(_ index: Int, selector: UInt16, attributes: UInt16, limit: UInt32, base: UInt64) {
            put(selector, at: index * 16)
            put(attributes, at: index * 16 + 2)
            put(limit, at: index * 16 + 4)
            put(base, at: index * 16 + 8)
        }
        // es, cs, ss, ds, fs, gs, gdtr, ldtr, idtr, tr
        segment(0, selector: 0, attributes: 0x93, limit: 0xffff, base: 0)
        segment(1, selector: 0xf000, attributes: 0x9b, limit: 0xffff, base: UInt64(eip & 0xffff_0000))
        segment(2, selector: 0, attributes: 0x93, limit: 0xffff, base: 0)
        segment(3, selector: 0, attributes: 0x93, limit: 0xffff, base: 0)
        segment(4, selector: 0, attributes: 0x93, limit: 0xffff, base: 0)
        segment(5, selector: 0, attributes: 0x93, limit: 0xffff, base: 0)
        segment(6, selector: 0, attributes: 0, limit: 0xffff, base: 0)
        segment(7, selector: 0, attributes: 0x82, limit: 0xffff, base: 0)
        segment(8, selector: 0, attributes: 0, limit: 0xffff, base: 0)
        segment(9, selector: 0, attributes: 0x8b, limit: 0xffff, base: 0)
        put(UInt64(0x1000), at: 0xD0)  // EFER: SVME
        put(UInt64(0x40), at: 0x148)  // CR4: MCE
        put(UInt64(0x10), at: 0x158)  // CR0: ET
        put(UInt64(0x400), at: 0x160)  // DR7
        put(UInt64(0xffff_0ff0), at: 0x168)  // DR6
        put(UInt64(0x2), at: 0x170)  // RFLAGS
        put(UInt64(eip & 0xffff), at: 0x178)  // RIP
        put(UInt64(0x0007_0406_0007_0406), at: 0x268)  // G_PAT
        put(UInt64(cpuSignature), at: 0x310)  // RDX: the CPU signature
        put(guestFeatures, at: 0x3B0)  // SEV_FEATURES
        put(UInt64(0x1), at: 0x3E8)  // XCR0
        put(UInt32(0x1f80), at: 0x408)  // MXCSR
        put(UInt16(0x37f), at: 0x410)  // x87 FCW
        return page
    }
}

/// A GUID's bytes as EFI lays them out (the first three fields little-endian).
func guid(_ text: String) -> [UInt8] {
    let hex = text.filter { $0 != "-" }
    var bytes: [UInt8] = []
    var index = hex.startIndex
    while index < hex.endIndex {
        let next = hex.index(index, offsetBy: 2)
        bytes.append(UInt8(hex[index..<next], radix: 16)!)
        index = next
    }
    return Array(bytes[0..<4].reversed()) + Array(bytes[4..<6].reversed()) + Array(bytes[6..<8].reversed()) + Array(bytes[8...])
}

private func le16(_ b: [UInt8], _ at: Int) -> UInt16 { UInt16(b[at]) | UInt16(b[at + 1]) << 8 }
private func le32(_ b: [UInt8], _ at: Int) -> UInt32 { UInt32(le16(b, at)) | UInt32(le16(b, at + 2)) << 16 }
