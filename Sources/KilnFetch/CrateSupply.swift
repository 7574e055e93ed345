import Crypto
import KilnCore
import KilnMessages
import Synchronization

/// Crates from the farm's cache, or from the registry into the cache: a crate is stored only once
/// its bytes match the digest the lock pins, and a cached one is re-hashed before it is served (a
/// corrupted or swapped entry is evicted and fetched again).
final class CrateSupply: Sendable {
    let registry: SparseRegistry
    let cache: CrateCache
    let metrics: FetchMetrics
    /// The registry's download template (from its config.json), read once.
    private let template = Mutex<String?>(nil)

    init(registry: SparseRegistry, cache: CrateCache, metrics: FetchMetrics) {
        self.registry = registry
        self.cache = cache
        self.metrics = metrics
    }

    static func refusal(_ failure: SparseRegistry.Failure, _ crate: String) -> FetchRefusal {
        if failure.status == 404 || failure.status == 410 { return FetchRefusal(.notFound, "the registry has no \(crate) (\(failure.description))") }
        return FetchRefusal(.upstream, failure.description, retryable: failure.retryable)
    }

    /// Makes sure `crate` is in the cache, verified; says whether it was (`hit`), was not (`miss`), or
    /// was there corrupted and has been fetched again (`evicted`). `fresh`: download it whatever the
    /// cache holds (a build's `skip_cache`).
    func ensure(_ crate: LockedCrate, fresh: Bool = false) async throws(FetchRefusal) -> FetchMetrics.CacheResult {
        var result = FetchMetrics.CacheResult.miss
        switch fresh ? .miss : cache.crate(sha256: crate.sha256) {
        case .hit:
            if cache.indexLine(sha256: crate.sha256) != nil {
                metrics.cache(.hit)
                return .hit
            }
        case .evicted:
            result = .evicted
        case .miss:
            break
        }
        metrics.cache(result)
        let label = "\(crate.name) \(crate.version)"
        do {
            let dl: String
            if let known = template.withLock({ $0 }) {
                dl = known
            } else {
                dl = try await registry.downloadTemplate()
                template.withLock { $0 = dl }
            }
            let line = try await registry.indexLine(name: crate.name, version: crate.version, checksum: crate.sha256)
            let bytes = try await registry.download(name: crate.name, version: crate.version, checksum: crate.sha256, template: dl)
            guard SHA256.hash(data: bytes).hexString == crate.sha256 else {
                throw FetchRefusal(
                    .upstream, "\(label) from \(registry.indexURL) does not match the checksum Cargo.lock pins (\(crate.sha256.prefix(16))…)")
            }
            do { try cache.store(sha256: crate.sha256, crate: bytes, indexLine: line) } catch {
                throw FetchRefusal(.upstream, "the fetch service cannot store \(label) in its cache: \(error)", retryable: true)
            }
            metrics.upstreamBytes.increment(by: Int64(bytes.count))
            return result
        } catch let failure as SparseRegistry.Failure {
            throw Self.refusal(failure, label)
        } catch let refusal as FetchRefusal {
            throw refusal
        } catch {
            throw FetchRefusal(.upstream, "\(error)", retryable: true)
        }
    }

    /// The registry index line of `crate` (fetched with the crate itself if it is not cached yet).
    func indexLine(_ crate: LockedCrate) async throws(FetchRefusal) -> String {
        if let line = cache.indexLine(sha256: crate.sha256) { return line }
        _ = try await ensure(crate)
        guard let line = cache.indexLine(sha256: crate.sha256) else { throw FetchRefusal(.upstream, "no index line for \(crate.name)", retryable: true) }
        return line
    }

    /// A crate's whole index file (nil: the registry has no such crate).
    func indexFile(_ name: String) async throws(FetchRefusal) -> [UInt8]? {
        do { return try await registry.indexFile(name) } catch { throw Self.refusal(error, name) }
    }
}
