/// An Intel TDX quote, version 4 or 5 (Intel TDX DCAP Quoting Library API, appendix "Quote Format"),
/// parsed with every length checked against the bytes that are there.
///
/// Layout: 48-byte header; the TD report body (v4: directly, 584 bytes; v5: type u16 ‖ size u32 ‖
/// body of 584 or 648 bytes); signature data length u32; then ECDSA signature (64) ‖ attestation
/// key (64) ‖ certification data type 6: QE report (384) ‖ QE report signature (64) ‖ QE
/// authentication data (u16 size) ‖ certification data type 5: the PCK certificate chain, PEM.
public struct TDXQuote: Sendable {
    public let bytes: [UInt8]
    public let version: UInt16
    /// Offset and length of the TD report body.
    public let bodyOffset: Int
    public let bodyLength: Int
    /// What the attestation key signed: header and body.
    public let signedBytes: ArraySlice<UInt8>
    public let signature: [UInt8]
    public let attestationKey: [UInt8]
    public let qeReport: [UInt8]
    public let qeReportSignature: [UInt8]
    public let qeAuthenticationData: [UInt8]
    public let pckChainPEM: String
    /// Where the certification data of type 5 (its u16 type field) starts: tools that re-assemble quotes need it.
    public let pckChainDataOffset: Int

    public static let maxSize = 1 << 20

    public init(_ bytes: [UInt8]) throws(TEEVerificationError) {
        guard bytes.count <= Self.maxSize else { throw .init("quote", "the quote is larger than \(Self.maxSize) bytes") }
        var r = Reader(bytes)
        let version: UInt16 = try r.le()
        let keyType: UInt16 = try r.le()
        let teeType: UInt32 = try r.le()
        guard version == 4 || version == 5 else { throw .init("quote", "unsupported TDX quote version \(version)") }
        guard keyType == 2 else { throw .init("quote", "attestation key type \(keyType) is not ECDSA P-256 (2)") }
        guard teeType == 0x81 else { throw .init("quote", "TEE type 0x\(String(teeType, radix: 16)) is not TDX (0x81)") }
        try r.skip(48 - 8)
        if version == 4 {
            bodyOffset = 48
            bodyLength = 584
        } else {
            let type: UInt16 = try r.le()
            let size: UInt32 = try r.le()
            guard (type == 2 && size == 584) || (type == 3 && size == 648) else {
                throw .init("quote", "v5 body type \(type) of \(size) bytes is neither TDX 1.0 (2, 584) nor TDX 1.5 (3, 648)")
            }
            bodyOffset = 54
            bodyLength = Int(size)
        }
        try r.seek(bodyOffset + bodyLength)
        signedBytes = bytes[0..<bodyOffset + bodyLength]
        let signatureDataLength: UInt32 = try r.le()
        guard Int(signatureDataLength) <= r.remaining else { throw .init("quote", "the signature data runs past the end of the quote") }
        signature = try r.take(64)
        attestationKey = try r.take(64)
        let certType: UInt16 = try r.le()
        let certSize: UInt32 = try r.le()
        guard certType == 6 else { throw .init("quote", "certification data type \(certType) is not a QE report (6)") }
        guard Int(certSize) <= r.remaining else { throw .init("quote", "the QE certification data runs past the end of the quote") }
        qeReport = try r.take(384)
        qeReportSignature = try r.take(64)
        let authSize: UInt16 = try r.le()
        qeAuthenticationData = try r.take(Int(authSize))
        pckChainDataOffset = r.position
        let innerType: UInt16 = try r.le()
        let innerSize: UInt32 = try r.le()
        guard innerType == 5 else {
            throw .init("pck-chain", "certification data type \(innerType) carries no PCK certificate chain (5); this verifier needs the chain in the quote")
        }
        pckChainPEM = String(decoding: try r.take(Int(innerSize)).filter { $0 != 0 }, as: UTF8.self)
        self.bytes = bytes
        self.version = version
    }

    public var body: [UInt8] { bytes.slice(bodyOffset, bodyLength) }
    public var teeTCBSVN: [UInt8] { bytes.slice(bodyOffset, 16) }
    public var mrSeam: [UInt8] { bytes.slice(bodyOffset + 16, 48) }
    public var tdAttributes: UInt64 { bytes.le(bodyOffset + 120) }
    public var xfam: UInt64 { bytes.le(bodyOffset + 128) }
    public var mrTD: [UInt8] { bytes.slice(bodyOffset + 136, 48) }
    public var mrConfigID: [UInt8] { bytes.slice(bodyOffset + 184, 48) }
    public var mrOwner: [UInt8] { bytes.slice(bodyOffset + 232, 48) }
    public func rtmr(_ i: Int) -> [UInt8] { bytes.slice(bodyOffset + 328 + 48 * i, 48) }
    public var reportData: [UInt8] { bytes.slice(bodyOffset + 520, 64) }
    /// TDATTRIBUTES bit 0: the TD is debuggable (its state readable by the host).
    public var debug: Bool { tdAttributes & 1 != 0 }
    /// The QE report's REPORTDATA (SGX report body offset 320).
    public var qeReportData: [UInt8] { qeReport.slice(320, 64) }

    struct Reader {
        let bytes: [UInt8]
        var position = 0

        init(_ bytes: [UInt8]) { self.bytes = bytes }

        var remaining: Int { bytes.count - position }

        mutating func le<T: FixedWidthInteger>() throws(TEEVerificationError) -> T {
            let n = MemoryLayout<T>.size
            guard remaining >= n else { throw .init("quote", "the quote ends early (at byte \(position))") }
            defer { position += n }
            return bytes.le(position)
        }

        mutating func take(_ n: Int) throws(TEEVerificationError) -> [UInt8] {
            guard n >= 0, remaining >= n else { throw .init("quote", "the quote ends early (needs \(n) bytes at \(position))") }
            defer { position += n }
            return bytes.slice(position, n)
        }

        mutating func skip(_ n: Int) throws(TEEVerificationError) { _ = try take(n) }

        mutating func seek(_ offset: Int) throws(TEEVerificationError) {
            guard offset <= bytes.count else { throw .init("quote", "the quote ends early (body)") }
            position = offset
        }
    }
}
