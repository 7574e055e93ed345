import Foundation

/// Produces a hardware report over 64 bytes of `report_data`. One implementation per kind of
/// confidential VM interface; the worker picks `tsm` when configfs-tsm exists, otherwise `none`.
public protocol EvidenceProvider: Sendable {
    /// "none", "sev-snp", "tdx".
    var tee: String { get }
    func report(reportData: [UInt8]) throws -> EvidenceReport
}

public struct EvidenceReport: Sendable, Equatable {
    public var tee: String
    public var provider: String
    public var report: [UInt8]?
    public var aux: [UInt8]?

    public init(tee: String, provider: String, report: [UInt8]?, aux: [UInt8]?) {
        self.tee = tee
        self.provider = provider
        self.report = report
        self.aux = aux
    }
}

/// No TEE: the evidence is only the farm key's signature. Verifiers reject it unless told to trust that key.
public struct NoTEEEvidenceProvider: EvidenceProvider {
    public init() {}
    public var tee: String { "none" }
    public func report(reportData: [UInt8]) throws -> EvidenceReport {
        EvidenceReport(tee: "none", provider: "none", report: nil, aux: nil)
    }
}

public enum EvidenceProviders {
    /// `tsm` when the configfs-tsm report directory exists, else `none`.
    public static func detect(tsmRoot: String = TSMEvidenceProvider.defaultRoot) -> any EvidenceProvider {
        var isDir: ObjCBool = false
        if FileManager.default.fileExists(atPath: tsmRoot, isDirectory: &isDir), isDir.boolValue {
            return TSMEvidenceProvider(root: tsmRoot)
        }
        return NoTEEEvidenceProvider()
    }
}
