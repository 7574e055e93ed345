import Foundation

/// What an offline check of a hardware report established, check by check.
///
/// A report whose signature or chain is *wrong* is never an appraisal: it is a thrown
/// `TEEVerificationError`. An appraisal is either `hardwareVerified` (the vendor's chain was checked
/// up to a pinned root) or `chainUnavailable` (the report parsed but the certificates needed to check
/// it were not at hand), so a verifier can say exactly which it was.
public struct TEEAppraisal: Sendable, Codable, Equatable {
    public enum Verdict: String, Sendable, Codable {
        case hardwareVerified = "hardware-verified"
        case chainUnavailable = "chain-unavailable"
    }

    public typealias Check = VerificationCheck

    /// "sev-snp" or "tdx".
    public var tee: String
    public var verdict: Verdict
    /// The 64 bytes the report carries, hex.
    public var reportData: String
    /// SEV-SNP `MEASUREMENT`, TDX `MRTD` (hex): what `--expect-measurement` compares.
    public var measurement: String
    /// Further measurement registers (TDX `RTMR0`–`RTMR3`, `MRSEAM`; SEV-SNP `HOST_DATA`…).
    public var registers: [String: String]
    /// The TCB the report states (SEV-SNP reported TCB components; TDX `TEE_TCB_SVN`).
    public var tcb: [String: String]
    /// Guest policy / TD attributes as reported.
    public var attributes: [String: String]
    public var checks: [Check]

    enum CodingKeys: String, CodingKey {
        case tee, verdict, measurement, registers, tcb, attributes, checks
        case reportData = "report_data"
    }
}

/// One check a verifier ran and its outcome; a report lists them all, so a reader sees exactly
/// what was proven and what was not (`skipped` always says why).
public struct VerificationCheck: Sendable, Codable, Equatable {
    public enum Outcome: String, Sendable, Codable { case pass, fail, skipped }
    public var name: String
    public var outcome: Outcome
    public var detail: String

    public init(_ name: String, _ outcome: Outcome, _ detail: String) {
        self.name = name
        self.outcome = outcome
        self.detail = detail
    }
}

/// Lowercase hex, for reports and messages.
enum HexText {
    static func of<C: Collection>(_ bytes: C) -> String where C.Element == UInt8 {
        var s = ""
        s.reserveCapacity(bytes.count * 2)
        let digits = Array("0123456789abcdef".utf8)
        for b in bytes {
            s.unicodeScalars.append(UnicodeScalar(digits[Int(b >> 4)]))
            s.unicodeScalars.append(UnicodeScalar(digits[Int(b & 15)]))
        }
        return s
    }
}

/// Little-endian reads from a report's bytes (callers check the length first).
extension Array where Element == UInt8 {
    func le<T: FixedWidthInteger>(_ offset: Int, as: T.Type = T.self) -> T {
        var v: T = 0
        for i in 0..<MemoryLayout<T>.size { v |= T(self[offset + i]) << (8 * i) }
        return v
    }

    func slice(_ offset: Int, _ count: Int) -> [UInt8] { Array(self[offset..<offset + count]) }
}
