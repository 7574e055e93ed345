import Foundation

/// The certificate table a SEV-SNP host may hand its guest (GHCB extended guest request; configfs-tsm
/// `auxblob`): entries of GUID (16) ‖ offset (u32) ‖ length (u32), ended by an all-zero entry;
/// offsets are from the start of the table; certificates are DER.
public struct SEVCertificateTable: Sendable {
    public var vcek: [UInt8]?
    public var ask: [UInt8]?
    public var ark: [UInt8]?

    // GUIDs in their in-memory (mixed-endian) byte order.
    static let vcekGUID = guidBytes("63da758d-e664-4564-adc5-f4b93be8accd")
    static let askGUID = guidBytes("4ab7b379-bbac-4fe4-a02f-05aef327c782")
    static let arkGUID = guidBytes("c0b406a4-a803-4952-9743-3fb6014cd0ae")

    public init(vcek: [UInt8]? = nil, ask: [UInt8]? = nil, ark: [UInt8]? = nil) {
        self.vcek = vcek
        self.ask = ask
        self.ark = ark
    }

    /// Parses a table; every offset and length is range-checked against the blob.
    public init(parsing blob: [UInt8]) throws(TEEVerificationError) {
        var position = 0
        var entries = 0
        while true {
            guard position + 24 <= blob.count else { throw .init("certificate-table", "the table is not terminated") }
            let guid = blob.slice(position, 16)
            let offset = Int(blob.le(position + 16, as: UInt32.self))
            let length = Int(blob.le(position + 20, as: UInt32.self))
            position += 24
            if guid.allSatisfy({ $0 == 0 }) { break }
            entries += 1
            guard entries <= 64 else { throw .init("certificate-table", "more than 64 entries") }
            guard offset <= blob.count, length <= blob.count - offset else {
                throw .init("certificate-table", "an entry points outside the table (offset \(offset), length \(length), table \(blob.count))")
            }
            let der = blob.slice(offset, length)
            switch guid {
            case Self.vcekGUID: vcek = der
            case Self.askGUID: ask = der
            case Self.arkGUID: ark = der
            default: continue
            }
        }
    }

    /// Serializes the table (for tests and for tools that assemble evidence).
    public func encoded() -> [UInt8] {
        let parts = [(Self.vcekGUID, vcek), (Self.askGUID, ask), (Self.arkGUID, ark)].compactMap { g, d in d.map { (g, $0) } }
        var header: [UInt8] = []
        var body: [UInt8] = []
        var offset = (parts.count + 1) * 24
        for (guid, der) in parts {
            header += guid + le32(offset) + le32(der.count)
            body += der
            offset += der.count
        }
        return header + [UInt8](repeating: 0, count: 24) + body
    }

    private func le32(_ v: Int) -> [UInt8] { (0..<4).map { UInt8(truncatingIfNeeded: v >> (8 * $0)) } }

    static func guidBytes(_ text: String) -> [UInt8] {
        let hex = text.replacingOccurrences(of: "-", with: "")
        var b: [UInt8] = stride(from: 0, to: 32, by: 2).map {
            UInt8(hex[hex.index(hex.startIndex, offsetBy: $0)..<hex.index(hex.startIndex, offsetBy: $0 + 2)], radix: 16)!
        }
        b[0..<4].reverse()
        b[4..<6].reverse()
        b[6..<8].reverse()
        return b
    }
}
