import Foundation
import KilnArchive
import NIOConcurrencyHelpers

/// Collects build output lines and turns them into `log` events at most ~10 times a second, in order,
/// capped in total (a note says how much was left out). Every line also goes to the full log file,
/// whose digest is recorded in the provenance's byproducts.
public final class LogBatcher: Sendable {
    struct State {
        var pending: [(stream: String, line: String)] = []
        var shippedBytes = 0
        var droppedBytes = 0
        var droppedLines = 0
        var noted = false
    }

    private let state = NIOLockedValueBox(State())
    /// The full log, opened for appending: each line is one `write(2)`, which `O_APPEND` makes atomic,
    /// so no lock is held across file I/O (docs/concurrency.md) — the lock only reserves the bytes.
    private let fd: Int32
    private let fileBytes = NIOLockedValueBox(0)
    let maxShippedBytes: Int
    let maxFileBytes: Int
    public let path: String

    public init(path: String, maxShippedBytes: Int, maxFileBytes: Int = 64 << 20) {
        self.path = path
        self.maxShippedBytes = maxShippedBytes
        self.maxFileBytes = maxFileBytes
        // Without the file the log is still shipped line by line; only the packaged copy is missing.
        fd = open(path, O_WRONLY | O_CREAT | O_TRUNC | O_APPEND | O_CLOEXEC | O_NOFOLLOW, 0o600)
    }

    deinit { if fd >= 0 { close(fd) } }

    /// Called from the process readers (their own threads, never the cooperative pool).
    public func append(_ stream: String, _ line: String) {
        var bytes = Array(line.utf8)
        bytes.append(UInt8(ascii: "\n"))
        let fits = fileBytes.withLockedValue { written in
            guard written + bytes.count <= maxFileBytes else { return false }
            written += bytes.count
            return true
        }
        if fits, fd >= 0 {
            // A short or failed write leaves the file shorter than the log; its digest (in provenance)
            // is of what the file holds, so nothing claims more than was kept.
            _ = bytes.withUnsafeBytes { Glibc.write(fd, $0.baseAddress, $0.count) }
        }
        state.withLockedValue { s in
            let n = line.utf8.count + 1
            if s.shippedBytes + n > maxShippedBytes {
                s.droppedBytes += n
                s.droppedLines += 1
                return
            }
            s.shippedBytes += n
            s.pending.append((stream, line))
        }
    }

    /// Takes what is pending as batches of consecutive lines of the same stream, in order.
    public func drain() -> [(stream: String, lines: [String])] {
        state.withLockedValue { s in
            var batches: [(stream: String, lines: [String])] = []
            for (stream, line) in s.pending {
                if batches.last?.stream == stream { batches[batches.count - 1].lines.append(line) } else { batches.append((stream, [line])) }
            }
            s.pending.removeAll(keepingCapacity: true)
            if s.droppedBytes > 0, !s.noted {
                s.noted = true
                batches.append(
                    ("stderr", ["[kiln] log limit of \(maxShippedBytes) bytes reached; further output is not shown (see the build log digest in provenance byproducts)"]))
            }
            return batches
        }
    }

    /// How much was left out of the events.
    public var dropped: (bytes: Int, lines: Int) { state.withLockedValue { ($0.droppedBytes, $0.droppedLines) } }

    /// Returns the file's digest. Called once the process readers are done (no `append` after it).
    public func finish() throws -> FileDigest {
        return try FileDigest.of(file: path)
    }
}
