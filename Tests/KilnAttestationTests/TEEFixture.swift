import Foundation
import KilnAttestation
import KilnTEE

/// The real SEV-SNP vectors (kept beside the KilnTEE tests) and an evidence provider that hands out
/// the genuine report whatever report_data it is asked for: a valid signature over another result.
enum TEEFixture {
    static let vectors = URL(fileURLWithPath: #filePath).deletingLastPathComponent().deletingLastPathComponent()
        .appendingPathComponent("KilnTEETests/Vectors").path

    static func file(_ name: String) -> [UInt8] { Array(FileManager.default.contents(atPath: vectors + "/" + name) ?? Data()) }

    static var vcekPEM: String { String(decoding: file("sev-gcp-vcek.pem"), as: UTF8.self) }
    static var chainPEM: String { String(decoding: file("sev-gcp-cert-chain.pem"), as: UTF8.self) }
    static let now = ISO8601DateFormatter().date(from: "2026-06-01T00:00:00Z")!

    /// The certificate table a SEV-SNP host would put in `auxblob`.
    static var certificateTable: [UInt8] {
        let chain = try! X509Certificate.pemChain(chainPEM)
        return SEVCertificateTable(vcek: try! X509Certificate.pemChain(vcekPEM)[0].der, ask: chain[0].der, ark: chain[1].der).encoded()
    }

    struct ReplayingProvider: EvidenceProvider {
        var tee: String { "sev-snp" }
        func report(reportData: [UInt8]) throws -> EvidenceReport {
            EvidenceReport(tee: "sev-snp", provider: "sev_guest", report: TEEFixture.file("sev-gcp.bin"), aux: TEEFixture.certificateTable)
        }
    }
}
