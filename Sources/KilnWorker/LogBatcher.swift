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
    private let file: NIOLockedValueBox<(handle: FileHandle?, bytes: Int)>
    let maxShippedBytes: Int
    let maxFileBytes: Int
    public let path: String

    public init(path: String, maxShippedBytes: Int, maxFileBytes: Int = 64 << 20) {
        self.path = path
        self.maxShippedBytes = maxShippedBytes
        self.maxFileBytes = maxFileBytes
        // Without the file the log is still shipped line by line; only the packaged copy is missing.
        let created = FileManager.default.createFile(atPath: path, contents: nil)
        file = NIOLockedValueBox((created ? FileHandle(forWritingAtPath: path) : nil, 0))
    }

    /// Called from the process readers.
    public func append(_ stream: String, _ line: String) {
        file.withLockedValue { f in
            let data = Data((line + "\n").utf8)
            if f.bytes + data.count <= maxFileBytes {
                try? f.handle?.write(contentsOf: data)
                f.bytes += data.count
            }
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

    /// Closes the file and returns its digest.
    public func finish() throws -> FileDigest {
        file.withLockedValue { f in
            try? f.handle?.close()
            f.handle = nil
        }
        return try FileDigest.of(file: path)
    }
}
