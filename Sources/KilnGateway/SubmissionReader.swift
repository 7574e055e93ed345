import Crypto
import Foundation
import KilnArchive
import NIOCore
import _NIOFileSystem

/// Reads a `POST /build` body as it arrives and never holds it whole: the source archive (a
/// multipart `source` part, or JSON `source_data` decoded from base64 on the fly) is hashed and
/// written to a spool file while the body streams in, and the body-size limit is enforced on the
/// bytes received so far, so an oversized upload is refused at the limit, not after it has been
/// buffered. Memory per upload is the parser's few KiB plus one write buffer.
struct SubmissionReader {
    /// Where archives are spooled before they belong to a job (`ResultFiles.incomingDirectory`).
    let spoolDirectory: String
    let maxBodyBytes: Int
    let metrics: GatewayMetrics
    /// Bytes gathered before each write to the spool file.
    var writeBufferBytes = 128 << 10

    func read<Body: AsyncSequence>(contentType: String?, body: Body) async throws -> BuildSubmission where Body.Element == ByteBuffer {
        var chunks = body.makeAsyncIterator()
        let first = try await chunks.next()
        let type = (contentType ?? "").lowercased()
        var json: SubmissionJSONScanner?
        var form: SubmissionFormReader?
        if type.hasPrefix("application/json") || type.isEmpty && first?.getInteger(at: first!.readerIndex, as: UInt8.self) == UInt8(ascii: "{") {
            json = SubmissionJSONScanner()
        } else if type.hasPrefix("multipart/form-data") {
            form = try SubmissionFormReader(contentType: contentType ?? "")
        } else {
            throw GatewayError(.unsupportedMediaType, "Content-Type must be application/json or multipart/form-data (got '\(contentType ?? "none")')")
        }

        let path = spoolDirectory + "/" + UUID().uuidString.lowercased()
        var hasher = SHA256()
        var size: Int64 = 0
        var leading: [UInt8] = []
        var received = 0
        let limit = maxBodyBytes
        let metrics = self.metrics
        do {
            try await FileSystem.shared.withFileHandle(forWritingAt: FilePath(path), options: .newFile(replaceExisting: false)) { file in
                var writer = file.bufferedWriter(capacity: .bytes(Int64(writeBufferBytes)))
                var archive: [UInt8] = []
                archive.reserveCapacity(96 << 10)
                func spool() async throws {
                    guard !archive.isEmpty else { return }
                    if leading.count < 4 { leading += archive.prefix(4 - leading.count) }
                    hasher.update(data: archive)
                    size += Int64(archive.count)
                    metrics.uploadBytesSpooled.increment(by: Int64(archive.count))
                    do { _ = try await writer.write(contentsOf: archive) } catch { throw Self.spoolFailure(error) }
                    archive.removeAll(keepingCapacity: true)
                }
                var next = first
                while let buffer = next {
                    received += buffer.readableBytes
                    metrics.uploadBytesReceived.increment(by: Int64(buffer.readableBytes))
                    guard received <= limit else {
                        throw GatewayError(.contentTooLarge, "the request body is larger than \(limit) bytes")
                    }
                    if json != nil {
                        try buffer.withUnsafeReadableBytes { bytes throws(GatewayError) in try json!.consume(bytes, archive: &archive) }
                    } else {
                        try form!.consume(buffer, archive: &archive)
                    }
                    try await spool()
                    next = try await chunks.next()
                }
                if json != nil { try json!.finish(archive: &archive) } else { try form!.finish() }
                try await spool()
                do { try await writer.flush() } catch { throw Self.spoolFailure(error) }
            }
        } catch {
            unlink(path)
            throw error
        }

        let fields = json?.fields ?? form?.fields ?? [:]
        let sawArchive = json?.sawArchive ?? form?.sawArchive ?? false
        if form != nil && !sawArchive && fields["repo_url"] == nil {
            unlink(path)
            throw GatewayError.badRequest("multipart upload needs a 'source' file part (ZIP or tar.gz) or 'repo_url' and 'ref'")
        }
        var archive: SpooledArchive?
        if sawArchive {
            archive = SpooledArchive(path: path, sha256: hasher.finalize().hexString, size: size, leadingBytes: leading)
        } else {
            unlink(path)
        }
        do {
            return try BuildSubmission.validated(nonce: fields["nonce"], repoURL: fields["repo_url"],
                                                 repoRef: fields["ref"] ?? fields["repo_ref"], archive: archive,
                                                 sourceName: fields["source_name"] ?? form?.archiveFilename)
        } catch {
            unlink(path)
            throw error
        }
    }

    /// The disk under the spool failed (full, read-only, gone): the operator's problem, not the caller's.
    static func spoolFailure(_ error: any Error) -> GatewayError {
        GatewayError(.serviceUnavailable, "the gateway cannot store uploads right now (its disk refused the write); try again later",
                     headers: [.retryAfter: "30"])
    }
}
