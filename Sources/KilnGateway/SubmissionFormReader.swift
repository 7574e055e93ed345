import Foundation
import MultipartKit
import NIOCore

/// Reads a `multipart/form-data` `POST /build` as it arrives (MultipartKit's streaming parser does the
/// parsing): the `source` part's bytes go straight to the caller's output, the small text fields are
/// kept up to `maxFieldBytes` each, parts Kiln does not know are dropped unread. Bytes that make no
/// progress (one endless header, a huge preamble) are bounded too, so a request never holds more than
/// a few hundred KiB in memory whatever its size.
///
/// A class only because MultipartKit reports through closures; it lives inside one request's task.
public final class SubmissionFormReader {
    static let archivePart = "source"
    static let textParts: Set<String> = ["nonce", "repo_url", "ref", "repo_ref", "source_name"]
    static let maxFieldBytes = 64 << 10
    static let maxHeadersPerPart = 32
    static let maxParts = 64
    /// Bytes the parser may take without reporting a header, body bytes or a part's end.
    static let maxBytesWithoutProgress = 64 << 10

    private enum Part {
        case archive
        case text(String, [UInt8])
        case ignored
    }

    private let parser: MultipartParser
    private var headers: [(String, String)] = []
    private var part: Part?
    private var parts = 0
    private var progressed = false
    private var stalledBytes = 0
    private var failure: GatewayError?
    private var output: [UInt8] = []

    public private(set) var fields: [String: String] = [:]
    public private(set) var sawArchive = false
    public private(set) var archiveFilename: String?

    /// The `boundary=` parameter of the Content-Type, or a 400 that says it is missing.
    public init(contentType: String) throws(GatewayError) {
        guard let boundary = contentType.split(separator: ";").map({ $0.trimmingCharacters(in: .whitespaces) })
                .first(where: { $0.lowercased().hasPrefix("boundary=") })
                .map({ String($0.dropFirst("boundary=".count)).trimmingCharacters(in: CharacterSet(charactersIn: "\"")) }),
              !boundary.isEmpty, boundary.count <= 70 else {
            throw GatewayError.badRequest("multipart/form-data needs a boundary parameter (1 to 70 characters) in Content-Type")
        }
        parser = MultipartParser(boundary: boundary)
        parser.onHeader = { [unowned self] name, value in
            progressed = true
            headers.append((name, value))
            if headers.count > Self.maxHeadersPerPart { fail("a multipart part has more than \(Self.maxHeadersPerPart) headers") }
        }
        parser.onBody = { [unowned self] body in
            progressed = true
            if part == nil { part = begin() }
            switch part {
            case .archive: output.append(contentsOf: body.readableBytesView)
            case .text(let name, var bytes):
                guard bytes.count + body.readableBytes <= Self.maxFieldBytes else {
                    return fail("the '\(name)' part is longer than \(Self.maxFieldBytes) bytes")
                }
                bytes.append(contentsOf: body.readableBytesView)
                part = .text(name, bytes)
            case .ignored, nil: break
            }
        }
        parser.onPartComplete = { [unowned self] in
            progressed = true
            if part == nil { part = begin() }
            if case .text(let name, let bytes) = part {
                if fields[name] != nil { fail("the '\(name)' part appears more than once") }
                fields[name] = String(decoding: bytes, as: UTF8.self)
            }
            part = nil
            headers = []
        }
    }

    /// Consumes the next piece of the body, appending the `source` part's bytes to `archive`.
    public func consume(_ buffer: ByteBuffer, archive: inout [UInt8]) throws(GatewayError) {
        progressed = false
        do { try parser.execute(buffer) } catch {
            throw GatewayError.badRequest("the multipart body could not be parsed (\(error)); check the boundary")
        }
        if let failure { throw failure }
        stalledBytes = progressed ? 0 : stalledBytes + buffer.readableBytes
        if stalledBytes > Self.maxBytesWithoutProgress {
            throw GatewayError.badRequest("the multipart body has more than \(Self.maxBytesWithoutProgress) bytes of headers or preamble in a row")
        }
        archive.append(contentsOf: output)
        output.removeAll(keepingCapacity: true)
    }

    /// After the last byte: a part still open means the body ended before its closing boundary.
    public func finish() throws(GatewayError) {
        if part != nil || !headers.isEmpty {
            throw GatewayError.badRequest("the multipart body ended before its closing boundary")
        }
    }

    /// Decides from the part's headers what its body is.
    private func begin() -> Part {
        parts += 1
        if parts > Self.maxParts {
            fail("the multipart body has more than \(Self.maxParts) parts")
            return .ignored
        }
        let disposition = headers.first { $0.0.lowercased() == "content-disposition" }?.1
        let name = disposition.flatMap { Self.parameter("name", in: $0) }
        if name == Self.archivePart {
            if sawArchive { fail("the 'source' part appears more than once") }
            sawArchive = true
            archiveFilename = disposition.flatMap { Self.parameter("filename", in: $0) }
            return .archive
        }
        if let name, Self.textParts.contains(name) { return .text(name, []) }
        return .ignored
    }

    private func fail(_ message: String) {
        if failure == nil { failure = GatewayError.badRequest(message) }
    }

    /// `name="value"` out of a Content-Disposition header.
    static func parameter(_ key: String, in header: String) -> String? {
        for piece in header.split(separator: ";") {
            let kv = piece.trimmingCharacters(in: .whitespaces)
            if kv.lowercased().hasPrefix(key + "=") {
                return String(kv.dropFirst(key.count + 1)).trimmingCharacters(in: CharacterSet(charactersIn: "\""))
            }
        }
        return nil
    }
}
