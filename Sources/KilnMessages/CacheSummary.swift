/// What a build's fetch phase took from the host's dependency cache and what it downloaded: carried
/// on the terminal event and shown as the job's `cache_summary`.
public struct CacheSummary: Codable, Sendable, Equatable {
    public var crates = 0
    public var hits = 0
    public var misses = 0
    /// Cache entries that no longer matched their checksum (removed and fetched again).
    public var evicted = 0
    public var bytesFetched: Int64 = 0
    public var bytesFromCache: Int64 = 0

    public init() {}

    enum CodingKeys: String, CodingKey {
        case crates, hits, misses, evicted
        case bytesFetched = "bytes_fetched"
        case bytesFromCache = "bytes_from_cache"
    }
}
