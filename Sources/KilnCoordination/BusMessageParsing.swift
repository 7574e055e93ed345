import KilnBus
import KilnMessages

/// The gateway's reading of what workers send over the bus, as pure functions: every header is a
/// number or string from the network, checked here before the coordinator touches its store or
/// files. Unit-tested, and fuzzed by `fuzz/FuzzGatewayMessages`.
public enum BusMessageParsing {
    public enum Rejection: Error, Equatable, Sendable {
        /// Headers missing or not numbers (answered 400).
        case malformed(String)
        /// Numbers that describe no real chunk (answered 400, counted as `bad_chunk`).
        case outOfRange(String)
    }

    public struct ResultChunk: Equatable, Sendable {
        public var jobID: String
        public var index: Int
        public var count: Int
        public var sha256: String
        public var size: Int64
        public var workerID: String?
        public var offset: Int64
    }

    /// `kiln.build.<job>.<kind>.<worker>` → the job id, if it is one subject token.
    public static func jobID(subject: String) -> String? {
        let parts = subject.split(separator: ".", omittingEmptySubsequences: false)
        guard parts.count == 5, parts[0] == "kiln", parts[1] == "build", !parts[2].isEmpty, !parts[4].isEmpty else { return nil }
        return String(parts[2])
    }

    public static func resultChunk(subject: String, headers: [String: String]?, payloadCount: Int, maxSize: Int64) -> Result<ResultChunk, Rejection> {
        let h = headers ?? [:]
        guard let jobID = jobID(subject: subject), let index = h[ResultChunkHeaders.index].flatMap(Int.init),
            let count = h[ResultChunkHeaders.count].flatMap(Int.init), let sha = h[ResultChunkHeaders.sha256],
            let size = h[ResultChunkHeaders.size].flatMap(Int64.init)
        else {
            return .failure(.malformed("result chunk headers index, count, sha256, size are required"))
        }
        guard sha.utf8.count == 64, sha.utf8.allSatisfy({ ($0 >= 48 && $0 <= 57) || ($0 >= 97 && $0 <= 102) }) else {
            return .failure(.malformed("result chunk header sha256 must be 64 lowercase hex characters"))
        }
        guard let offset = ChunkBounds.resultChunkOffset(index: index, count: count, size: size, bytes: payloadCount, maxSize: maxSize) else {
            return .failure(.outOfRange("result chunk index/count/size out of range (at most \(maxSize) bytes)"))
        }
        return .success(
            ResultChunk(
                jobID: jobID, index: index, count: count, sha256: sha, size: size,
                workerID: h[ResultChunkHeaders.workerID], offset: offset))
    }

    /// `kiln.build.<job>.result.<worker>` (held-back requests are results or source requests).
    public static func isResultChunk(subject: String) -> Bool {
        let parts = subject.split(separator: ".", omittingEmptySubsequences: false)
        return parts.count == 5 && parts[3] == "result"
    }

    /// A worker's request for source chunk `index` of a job.
    public static func sourceRequest(subject: String, headers: [String: String]?) -> (jobID: String, index: Int)? {
        guard let jobID = jobID(subject: subject), let index = headers?["index"].flatMap(Int.init) else { return nil }
        return (jobID, index)
    }

    /// Where a source chunk lies in an upload of `size` bytes.
    public static func sourceChunkOffset(index: Int, chunkSize: Int, size: Int64) -> Int64? {
        ChunkBounds.sourceChunkOffset(index: index, chunkSize: chunkSize, size: size)
    }
}
