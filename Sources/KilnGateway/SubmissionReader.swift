import Crypto
import Foundation
import KilnArchive
import KilnCoordination
import KilnMessages
import KilnSubmission
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
    /// The most a build may ask for in `build_config`.
    var buildMaxima = BuildConfig.Maxima()
    /// Bytes gathered before each write to the spool file.
    var writeBufferBytes = 128 << 10
    /// Archives up to this size stay in memory (most sources are small; they never touch the disk).
    var memoryLimit = 64 << 10

    func read<Body: AsyncSequence>(contentType: String?, body: Body) async throws -> BuildSubmission where Body.Element == ByteBuffer {
        var chunks = body.makeAsyncIterator()
        let first = try await chunks.next()
        let type = (contentType ?? "").lowercased()
        var json: SubmissionJSONScanner?
        var form: SubmissionFormReader?
        if type.hasPrefix("application/json") || type.isEmpty && first?.getInteger(at: first!.readerIndex, as: UInt8.self) == UInt8(ascii: "{") {
            json = SubmissionJSONScanner()
        } else if type.hasPrefix("multipart/form-data") {
            form = try parsing { () throws(SubmissionError) in try SubmissionFormReader(contentType: contentType ?? "") }
        } else {
            throw GatewayError(.unsupportedMediaType, "Content-Type must be application/json or multipart/form-data (got '\(contentType ?? "none")')")
        }

        var spool = ArchiveSpool(
            path: spoolDirectory + "/" + UUID().uuidString.lowercased(), memoryLimit: memoryLimit,
            writeBufferBytes: writeBufferBytes, metrics: metrics)
        var received = 0
        do {
            var archive: [UInt8] = []
            archive.reserveCapacity(96 << 10)
            var next = first
            while let buffer = next {
                received += buffer.readableBytes
                metrics.uploadBytesReceived.increment(by: Int64(buffer.readableBytes))
                guard received <= maxBodyBytes else {
                    throw GatewayError(.contentTooLarge, "the request body is larger than \(maxBodyBytes) bytes")
                }
                try parsing { () throws(SubmissionError) in
                    if json != nil {
                        try buffer.withUnsafeReadableBytes { bytes throws(SubmissionError) in try json!.consume(bytes, archive: &archive) }
                    } else {
                        try form!.consume(buffer, archive: &archive)
                    }
                }
                try await spool.append(&archive)
                next = try await chunks.next()
            }
            try parsing { () throws(SubmissionError) in
                if json != nil { try json!.finish(archive: &archive) } else { try form!.finish() }
            }
            try await spool.append(&archive)
            try await spool.finish()
        } catch {
            await spool.discard()
            throw error
        }

        let fields = json?.fields ?? form?.fields ?? [:]
        let sawArchive = json?.sawArchive ?? form?.sawArchive ?? false
        if form != nil && !sawArchive && fields["repo_url"] == nil {
            await spool.discard()
            throw GatewayError.badRequest("multipart upload needs a 'source' file part (ZIP or tar.gz) or 'repo_url' and 'ref'")
        }
        var archive: SpooledArchive?
        if sawArchive {
            archive = spool.archive
        } else {
            await spool.discard()
        }
        do {
            return try parsing { () throws(SubmissionError) in
                var submission = try BuildSubmission.validated(
                    nonce: fields["nonce"], repoURL: fields["repo_url"],
                    repoRef: fields["ref"] ?? fields["repo_ref"], archive: archive,
                    sourceName: fields["source_name"] ?? form?.archiveFilename)
                try submission.readOptions(from: fields, maxima: buildMaxima)
                return submission
            }
        } catch {
            await spool.discard()
            throw error
        }
    }

    /// Runs a step of the pure parsers, answering what they refuse as the HTTP 400 it is.
    private func parsing<T>(_ step: () throws(SubmissionError) -> T) throws(GatewayError) -> T {
        do { return try step() } catch { throw GatewayError(error) }
    }

    /// The disk under the spool failed (full, read-only, gone): the operator's problem, not the caller's.
    static func spoolFailure(_ error: any Error) -> GatewayError {
        GatewayError(
            .serviceUnavailable, "the gateway cannot store uploads right now (its disk refused the write); try again later",
            headers: [.retryAfter: "30"])
    }
}
