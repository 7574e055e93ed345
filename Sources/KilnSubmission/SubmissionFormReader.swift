import Foundation
import NIOCore

/// Reads a `multipart/form-data` `POST /build` as it arrives (`MultipartStreamParser` does the
/// parsing): the `source` part's bytes go straight to the caller's output, the small text fields are
/// kept up to `maxFieldBytes` each, parts Kiln does not know are dropped unread. Bytes that make no
/// progress (a huge preamble) are bounded too, so a request never holds more than a few hundred KiB
/// in memory whatever its size.
public struct SubmissionFormReader: Sendable {
    static let archivePart = "source"
    /// `skip_cache`, `build_config` and `build_options` are JSON text (`true`, `{"vcpus": 2}`).
    static let textParts: Set<String> = ["nonce", "repo_url", "ref", "repo_ref", "source_name", "skip_cache", "build_config", "build_options"]
    static let maxFieldBytes = 64 << 10
    static let maxParts = 64
    /// Bytes the parser may take without reporting a header, body bytes or a part's end.
    static let maxBytesWithoutProgress = 64 << 10

    private enum Part: Sendable {
        case archive
        case text(String, [UInt8])
        case ignored
    }

    private var parser: MultipartStreamParser
    private var form = Form()
    private var stalledBytes = 0

    public var fields: [String: String] { form.fields }
    public var sawArchive: Bool { form.sawArchive }
    public var archiveFilename: String? { form.archiveFilename }

    /// What the parts said so far (apart from the parser, so both can change in one step).
    private struct Form: Sendable {
        var part: Part?
        var parts = 0
        var fields: [String: String] = [:]
        var sawArchive = false
        var archiveFilename: String?

        mutating func handle(_ event: MultipartStreamParser.Event, archive: inout [UInt8]) throws(SubmissionError) {
            switch event {
            case .headers(let headers):
                part = try begin(headers)
            case .body(let bytes):
                switch part {
                case .archive: archive.append(contentsOf: bytes)
                case .text(let name, var text):
                    guard text.count + bytes.count <= SubmissionFormReader.maxFieldBytes else {
                        throw SubmissionError("the '\(name)' part is longer than \(SubmissionFormReader.maxFieldBytes) bytes")
                    }
                    part = nil  // drop the reference so the append does not copy
                    text.append(contentsOf: bytes)
                    part = .text(name, text)
                case .ignored, nil: break
                }
            case .partEnd:
                if case .text(let name, let bytes) = part {
                    guard fields[name] == nil else { throw SubmissionError("the '\(name)' part appears more than once") }
                    fields[name] = String(decoding: bytes, as: UTF8.self)
                }
                part = nil
            case .end:
                break
            }
        }

        /// Decides from the part's headers what its body is.
        mutating func begin(_ headers: [(name: String, value: String)]) throws(SubmissionError) -> Part {
            parts += 1
            guard parts <= SubmissionFormReader.maxParts else { throw SubmissionError("the multipart body has more than \(SubmissionFormReader.maxParts) parts") }
            let disposition = headers.first { $0.name.lowercased() == "content-disposition" }?.value
            let name = disposition.flatMap { SubmissionFormReader.parameter("name", in: $0) }
            if name == SubmissionFormReader.archivePart {
                guard !sawArchive else { throw SubmissionError("the 'source' part appears more than once") }
                sawArchive = true
                archiveFilename = disposition.flatMap { SubmissionFormReader.parameter("filename", in: $0) }
                return .archive
            }
            if let name, SubmissionFormReader.textParts.contains(name) { return .text(name, []) }
            return .ignored
        }
    }

    /// The `boundary=` parameter of the Content-Type, or a 400 that says it is missing.
    public init(contentType: String) throws(SubmissionError) {
        guard
            let boundary = contentType.split(separator: ";").map({ $0.trimmingCharacters(in: .whitespaces) })
                .first(where: { $0.lowercased().hasPrefix("boundary=") })
                .map({ String($0.dropFirst("boundary=".count)).trimmingCharacters(in: CharacterSet(charactersIn: "\"")) }),
            !boundary.isEmpty, boundary.count <= 70
        else {
            throw SubmissionError("multipart/form-data needs a boundary parameter (1 to 70 characters) in Content-Type")
        }
        parser = MultipartStreamParser(boundary: boundary)
    }

    /// Consumes the next piece of the body, appending the `source` part's bytes to `archive`.
    public mutating func consume(_ buffer: ByteBuffer, archive: inout [UInt8]) throws(SubmissionError) {
        var progressed = false
        do {
            try buffer.withUnsafeReadableBytes { bytes in
                try parser.parse(bytes) { event in
                    progressed = true
                    try form.handle(event, archive: &archive)
                }
            }
        } catch let error as SubmissionError {
            throw error
        } catch {
            throw SubmissionError("the multipart body could not be parsed: \(error)")
        }
        stalledBytes = progressed ? 0 : stalledBytes + buffer.readableBytes
        if stalledBytes > Self.maxBytesWithoutProgress {
            throw SubmissionError("the multipart body has more than \(Self.maxBytesWithoutProgress) bytes of preamble or headers in a row")
        }
    }

    /// After the last byte: a part still open means the body ended before its closing boundary.
    public func finish() throws(SubmissionError) {
        guard parser.isFinished else { throw SubmissionError("the multipart body ended before its closing boundary") }
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
