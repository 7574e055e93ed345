import Foundation
import KilnTEE

/// Real evidence from cloud confidential VMs (see Vectors/SOURCES.md), and ways to spoil it.
enum TEEVectors {
    static let directory = URL(fileURLWithPath: #filePath).deletingLastPathComponent().appendingPathComponent("Vectors").path

    static func bytes(_ name: String) -> [UInt8] {
        Array(FileManager.default.contents(atPath: directory + "/" + name) ?? Data())
    }

    static func text(_ name: String) -> String { String(decoding: bytes(name), as: UTF8.self) }

    static func der(_ pem: String, index: Int = 0) -> [UInt8] { try! X509Certificate.pemChain(pem)[index].der }

    /// The Google Cloud TDX quote, base64 inside JSON.
    static var gcpTDXQuote: [UInt8] {
        let json = try! JSONSerialization.jsonObject(with: Data(bytes("tdx-v4-gcp.json"))) as! [String: Any]
        let b64 = (json["tdx"] as! [String: Any])["quote"] as! String
        return Array(Data(base64Encoded: b64)!)
    }

    /// A time at which every certificate in the vectors is valid (the VCEKs were issued in December 2025).
    static let now = ISO8601DateFormatter().date(from: "2026-06-01T00:00:00Z")!

    static func flipping(_ bytes: [UInt8], at offset: Int) -> [UInt8] {
        var b = bytes
        b[offset] ^= 0x01
        return b
    }
}
