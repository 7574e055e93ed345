/// An AMD SEV-SNP `ATTESTATION_REPORT` (SEV-SNP ABI spec, table "ATTESTATION_REPORT Structure"):
/// 1184 bytes, little-endian, signed with ECDSA P-384 / SHA-384 over bytes [0, 0x2A0).
public struct SEVSNPReport: Sendable {
    public static let size = 0x4A0
    public static let signedLength = 0x2A0

    public let bytes: [UInt8]
    public var version: UInt32 { bytes.le(0x00) }
    public var guestSVN: UInt32 { bytes.le(0x04) }
    public var policy: UInt64 { bytes.le(0x08) }
    public var vmpl: UInt32 { bytes.le(0x30) }
    public var signatureAlgorithm: UInt32 { bytes.le(0x34) }
    public var currentTCB: UInt64 { bytes.le(0x38) }
    public var platformInfo: UInt64 { bytes.le(0x40) }
    /// Bit 0 MASK_CHIP_KEY (signed with zeros), bit 1 MASK_CHIP_ID, bits 2–4 SIGNING_KEY (0 = VCEK).
    public var keyInfo: UInt32 { bytes.le(0x48) }
    public var reportData: [UInt8] { bytes.slice(0x50, 64) }
    public var measurement: [UInt8] { bytes.slice(0x90, 48) }
    public var hostData: [UInt8] { bytes.slice(0xC0, 32) }
    public var idKeyDigest: [UInt8] { bytes.slice(0xE0, 48) }
    public var reportedTCB: UInt64 { bytes.le(0x180) }
    /// CPUID family / model / stepping (report version 3 and later).
    public var cpuidFamily: UInt8 { bytes[0x188] }
    public var cpuidModel: UInt8 { bytes[0x189] }
    public var chipID: [UInt8] { bytes.slice(0x1A0, 64) }
    public var signedBytes: ArraySlice<UInt8> { bytes[0..<Self.signedLength] }
    /// r and s: 72-byte little-endian integers, of which P-384 uses the low 48 bytes.
    public var signatureR: [UInt8] { bytes.slice(0x2A0, 72) }
    public var signatureS: [UInt8] { bytes.slice(0x2E8, 72) }

    /// Policy bit 19: the guest may be debugged (its memory read by the host).
    public var debugAllowed: Bool { policy & (1 << 19) != 0 }
    public var signingKeyIsVCEK: Bool { (keyInfo >> 2) & 7 == 0 }
    public var chipIDMasked: Bool { keyInfo & 2 != 0 }

    public init(_ bytes: [UInt8]) throws(TEEVerificationError) {
        guard bytes.count == Self.size else {
            throw .init("report", "a SEV-SNP report is \(Self.size) bytes, this one is \(bytes.count)")
        }
        self.bytes = bytes
        guard (2...5).contains(version) else { throw .init("report", "unsupported SEV-SNP report version \(version)") }
        guard signatureAlgorithm == 1 else {
            throw .init("report", "signature algorithm \(signatureAlgorithm) is not ECDSA P-384 with SHA-384 (1)")
        }
    }

    /// The TCB_VERSION fields, in the layout of the report's processor generation.
    public struct TCB: Sendable, Equatable {
        public var fmc: UInt8?
        public var bootloader: UInt8
        public var tee: UInt8
        public var snp: UInt8
        public var microcode: UInt8

        public init(_ raw: UInt64, product: AMDProduct) {
            let b = (0..<8).map { UInt8(truncatingIfNeeded: raw >> (8 * UInt64($0))) }
            if product == .turin {
                (fmc, bootloader, tee, snp, microcode) = (b[0], b[1], b[2], b[3], b[7])
            } else {
                (fmc, bootloader, tee, snp, microcode) = (nil, b[0], b[1], b[6], b[7])
            }
        }

        var fields: [String: String] {
            var f = ["bootloader": "\(bootloader)", "tee": "\(tee)", "snp": "\(snp)", "microcode": "\(microcode)"]
            if let fmc { f["fmc"] = "\(fmc)" }
            return f
        }
    }
}

/// The AMD EPYC generations whose root keys Kiln pins.
public enum AMDProduct: String, Sendable, CaseIterable {
    case milan = "Milan"
    case genoa = "Genoa"
    case turin = "Turin"

    /// From a VCEK's issuer, "SEV-Milan" and so on.
    init?(issuerName: String) {
        guard let p = AMDProduct.allCases.first(where: { issuerName == "SEV-\($0.rawValue)" }) else { return nil }
        self = p
    }
}
