import Crypto
import Foundation
import KilnArchive
import KilnCoordination
import KilnCore
import KilnSubmission
import _NIOFileSystem

/// Where an upload's archive goes while its body streams in: memory up to `memoryLimit`, then a file
/// (written through NIOFileSystem's thread pool, never on an event loop), hashed on the way either
/// way. `discard()` leaves nothing behind on any failure path.
struct ArchiveSpool {
    let path: String
    let memoryLimit: Int
    let writeBufferBytes: Int
    let metrics: GatewayMetrics

    private var hasher = SHA256()
    private var size: Int64 = 0
    private var leading: [UInt8] = []
    private var memory: [UInt8] = []
    private var file: WriteFileHandle?
    private var writer: BufferedWriter<WriteFileHandle>?
    private var finished = false

    init(path: String, memoryLimit: Int, writeBufferBytes: Int, metrics: GatewayMetrics) {
        self.path = path
        self.memoryLimit = memoryLimit
        self.writeBufferBytes = writeBufferBytes
        self.metrics = metrics
    }

    /// Takes `bytes` (leaving it empty, its capacity kept).
    mutating func append(_ bytes: inout [UInt8]) async throws {
        guard !bytes.isEmpty else { return }
        if leading.count < 4 { leading += bytes.prefix(4 - leading.count) }
        hasher.update(data: bytes)
        size += Int64(bytes.count)
        metrics.uploadBytesSpooled.increment(by: Int64(bytes.count))
        do {
            if writer == nil && memory.count + bytes.count > memoryLimit {
                let handle = try await FileSystem.shared.openFile(forWritingAt: FilePath(path), options: .newFile(replaceExisting: false))
                file = handle
                writer = handle.bufferedWriter(capacity: .bytes(Int64(writeBufferBytes)))
                if !memory.isEmpty { _ = try await writer!.write(contentsOf: memory) }
                memory = []
            }
            if writer != nil {
                _ = try await writer!.write(contentsOf: bytes)
            } else {
                memory += bytes
            }
        } catch {
            throw SubmissionReader.spoolFailure(error)
        }
        bytes.removeAll(keepingCapacity: true)
    }

    /// Flushes and closes the file (if there is one): the archive is complete.
    mutating func finish() async throws {
        guard let file else { return }
        do {
            try await writer!.flush()
            self.file = nil
            writer = nil
            try await file.close()
        } catch {
            throw SubmissionReader.spoolFailure(error)
        }
        finished = true
    }

    /// Drops whatever was spooled.
    mutating func discard() async {
        if let file { try? await file.close(makeChangesVisible: false) }
        file = nil
        writer = nil
        memory = []
        if finished { unlink(path) }
    }

    var archive: SpooledArchive {
        SpooledArchive(storage: finished ? .file(path) : .memory(memory), sha256: hasher.finalize().hexString, size: size, leadingBytes: leading)
    }
}
