/// Where a chunk named by bus headers lies in a file, or `nil` when the numbers cannot describe a
/// real chunk. Every header value is a number from the network: each is range-checked before any
/// arithmetic, and the arithmetic itself reports overflow instead of trapping.
enum ChunkBounds {
    /// A result chunk: `index` of `count`, `bytes` long; every chunk but the last is full, the last
    /// ends the file of `size` bytes, which may be at most `maxSize`.
    static func resultChunkOffset(index: Int, count: Int, size: Int64, bytes: Int, maxSize: Int64) -> Int64? {
        // Every chunk holds at least one byte, so there are never more chunks than bytes.
        guard size >= 0, size <= maxSize, count > 0, Int64(count) <= max(1, size), index >= 0, index < count, bytes > 0 || size == 0,
            Int64(bytes) <= size || size == 0
        else { return nil }
        let offset: Int64
        if index < count - 1 {
            let (o, overflow) = Int64(index).multipliedReportingOverflow(by: Int64(bytes))
            guard !overflow else { return nil }
            offset = o
        } else {
            offset = size - Int64(bytes)
        }
        let (end, overflow) = offset.addingReportingOverflow(Int64(bytes))
        guard offset >= 0, !overflow, end <= size else { return nil }
        return offset
    }

    /// A source chunk of `chunkSize` bytes at `index`, in an upload of `size` bytes.
    static func sourceChunkOffset(index: Int, chunkSize: Int, size: Int64) -> Int64? {
        guard index >= 0, chunkSize > 0, size >= 0 else { return nil }
        let (offset, overflow) = Int64(index).multipliedReportingOverflow(by: Int64(chunkSize))
        guard !overflow, offset < size || (offset == 0 && size == 0) else { return nil }
        return offset
    }
}
