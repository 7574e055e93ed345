import AsyncHTTPClient
import Crypto
import Foundation
import KilnBus
import KilnBusClient
import KilnCore
import KilnMessages
import Logging
import NIOConcurrencyHelpers
import NIOPosix
import ServiceLifecycle
import Synchronization

/// The farm's fetch service (`kiln-fetch`): the one place with a network that build inputs come
/// from. Workers ask over the bus (`kiln.worker.<id>.fetch.<kind>`, `FetchKind`) and get bytes in
/// chunks; they check every byte against a digest they already trust, so this service is trusted for
/// availability only — except for which commit a branch or tag names, which the worker records as
/// this service's word.
///
/// It keeps a content-addressed crate cache for the whole farm (it survives restarts; every entry is
/// re-hashed when first served), charges every request to the asking worker's account (`FetchLedger`)
/// and serves a worker only crates its filed lock plan names. It holds no key and no secret: the
/// worst a hostile registry, repository or worker can make it do is bounded by the ledger.
public final class FetchService: Service, Sendable {
    public struct Configuration: Sendable {
        public var bus: BusClient.Configuration
        /// Sparse index the crates come from (crates.io's, or an operator's mirror).
        public var cargoRegistry = "https://index.crates.io/"
        public var cache: CrateCache.Configuration
        /// Where packs are made (a fresh directory per git fetch, removed once served).
        public var workDirectory: String
        public var sourceHosts = SourceHostPolicy(allowed: [])
        public var gitTimeout: Duration = .seconds(600)
        public var maxPackBytes: Int64 = 2 << 30
        public var quota = FetchLedger.Quota()
        /// Bytes per reply (bounded by the broker's frame size less room for headers).
        public var chunkBytes = 512 << 10
        /// Requests handled at once; more are answered 503 (the worker retries).
        public var maxConcurrent = 32
        /// Serve requests the broker did not stamp with a sender (a broker without user auth, where
        /// nothing can tell workers apart). Off by default: then a request is served only when the
        /// broker says it comes from the worker its subject names.
        public var allowUnstampedRequests = false
        /// The compiled-dependency cache (nil: none; workers then build every dependency themselves).
        public var dependencyCache: DependencyCacheStore.Configuration?

        public init(bus: BusClient.Configuration, cache: CrateCache.Configuration, workDirectory: String) {
            self.bus = bus
            self.cache = cache
            self.workDirectory = workDirectory
        }
    }

    /// A pack being served to one worker.
    struct PackEntry: Sendable {
        var packed: GitPacker.Packed
        var directory: String
        var made: ContinuousClock.Instant
    }

    let configuration: Configuration
    let logger: Logger
    let metrics: FetchMetrics
    let cache: CrateCache
    let ledger: Mutex<FetchLedger>
    let packs = Mutex<[String: PackEntry]>([:])
    /// The last index file read per worker, so its later chunks come from the same bytes.
    let indexFiles = Mutex<[String: (name: String, bytes: [UInt8])]>([:])
    let inFlight = Mutex(0)
    let dependencyCache: DependencyCacheStore?
    let clock: @Sendable () -> ContinuousClock.Instant

    public init(
        configuration: Configuration, logger: Logger, metrics: FetchMetrics = FetchMetrics(),
        clock: @escaping @Sendable () -> ContinuousClock.Instant = { .now }
    ) throws {
        self.configuration = configuration
        self.logger = logger
        self.metrics = metrics
        self.cache = try CrateCache(configuration: configuration.cache)
        self.ledger = Mutex(FetchLedger(quota: configuration.quota))
        self.clock = clock
        self.dependencyCache = try configuration.dependencyCache.map(DependencyCacheStore.init(configuration:))
        try FileManager.default.createDirectory(atPath: configuration.workDirectory, withIntermediateDirectories: true, attributes: [.posixPermissions: 0o700])
    }

    public func run() async throws {
        let http = HTTPClient(eventLoopGroupProvider: .singleton, configuration: .init(redirectConfiguration: .disallow))
        let registry: SparseRegistry
        do { registry = try SparseRegistry(url: configuration.cargoRegistry, http: http) } catch {
            try await http.shutdown()
            throw error
        }
        let client: BusClient
        do { client = try await BusClient.connect(configuration.bus, logger: logger) } catch {
            try await http.shutdown()
            throw error
        }
        let requests = try client.subscribe(Subjects.fetchAll)
        try await client.flush()
        metrics.cacheBytes.set(Double(cache.totalBytes()))
        FileHandle.standardOutput.write(Data("kiln-fetch ready (registry \(registry.indexURL), cache \(configuration.cache.directory))\n".utf8))
        let supply = CrateSupply(registry: registry, cache: cache, metrics: metrics)
        // A graceful shutdown cancels the group: the subscription's loop ends, housekeeping stops.
        await cancelWhenGracefulShutdown {
            await withDiscardingTaskGroup { group in
                group.addTask {
                    // Housekeeping: accounts and packs past their window.
                    while (try? await Task.sleep(for: .seconds(15))) != nil { self.expire() }
                }
                for await message in requests {
                    // Answered only on the requesting worker's own inbox: the reply subject is the
                    // requester's choice, and nats-server does not restrict it. Anything else is
                    // dropped unanswered (an answer would be published where the worker may not).
                    guard let reply = message.reply, let (worker, _) = Subjects.parseFetch(message.subject),
                        BusRoles.isInbox(reply, ofWorker: worker)
                    else {
                        self.metrics.refused(.forbidden)
                        continue
                    }
                    let admitted = self.inFlight.withLock { n -> Bool in
                        guard n < self.configuration.maxConcurrent else { return false }
                        n += 1
                        return true
                    }
                    guard admitted else {
                        self.metrics.refused(.quota)
                        // Best effort: a worker that misses this reply times out and retries the same way.
                        try? await client.publish(
                            reply, payload: [UInt8](), headers: Self.refusalHeaders(FetchRefusal(.quota, "the fetch service is busy", retryable: true)))
                        continue
                    }
                    group.addTask {
                        defer { self.inFlight.withLock { $0 -= 1 } }
                        let (headers, payload) = await self.answer(message, supply: supply)
                        do { try await client.publish(reply, payload: payload, headers: headers) } catch {
                            self.logger.warning("cannot send a fetch reply: \(error)", metadata: ["subject": "\(message.subject)"])
                        }
                    }
                }
                group.cancelAll()
            }
        }
        await client.close()
        try await http.shutdown()
    }

    static func refusalHeaders(_ refusal: FetchRefusal) -> [String: String] {
        [
            FetchReplyHeader.status: String(refusal.status), FetchReplyHeader.message: String(refusal.message.prefix(1024)),
            FetchReplyHeader.retryable: refusal.retryable ? "1" : "0",
        ]
    }

    /// One request in, one reply out (headers and payload); every refusal is counted and logged.
    func answer(_ message: BusMessage, supply: CrateSupply) async -> ([String: String], [UInt8]) {
        guard let (worker, kind) = Subjects.parseFetch(message.subject) else {
            return (Self.refusalHeaders(FetchRefusal(.badRequest, "not a fetch subject")), [])
        }
        do {
            try checkSender(message, worker: worker)
            let (headers, payload) = try await serve(kind, message.payloadBytes, headers: message.headers ?? [:], worker: worker, supply: supply)
            metrics.served(kind, bytes: payload.count)
            return (headers.merging([FetchReplyHeader.status: "200"]) { $1 }, payload)
        } catch {
            metrics.refused(error.reason)
            logger.notice("refused a fetch: \(error.message)", metadata: ["worker_id": "\(worker)", "kind": "\(kind.rawValue)"])
            return (Self.refusalHeaders(error), [])
        }
    }

    /// On a broker that authenticates, the stamped sender must be the worker the subject names.
    func checkSender(_ message: BusMessage, worker: String) throws(FetchRefusal) {
        switch message.headers?[BusHeader.senderHeader] {
        case let stamp? where stamp == WorkerCredential.identity(of: worker): return
        case nil where configuration.allowUnstampedRequests: return
        case nil: throw FetchRefusal(.forbidden, "the request carries no broker-stamped sender (start kiln-fetch with --allow-unstamped on a broker without auth)")
        case let other?: throw FetchRefusal(.forbidden, "'\(other.prefix(80))' may not fetch as worker \(worker)")
        }
    }

    func decode<T: Decodable>(_ type: T.Type, _ payload: [UInt8], limit: Int) throws(FetchRefusal) -> T {
        guard payload.count <= limit else { throw FetchRefusal(.tooLarge, "the request is larger than \(limit) bytes") }
        do { return try JSONDecoder().decode(T.self, from: Data(payload)) } catch {
            throw FetchRefusal(.badRequest, "the request is not a valid \(T.self)")
        }
    }

    func serve(
        _ kind: FetchKind, _ payload: [UInt8], headers: [String: String] = [:], worker: String, supply: CrateSupply
    ) async throws(FetchRefusal) -> ([String: String], [UInt8]) {
        let now = clock()
        switch kind {
        case .plan:
            let plan = try decode(FetchPlan.self, payload, limit: 8 << 20)
            try ledger.withLock { l throws(FetchRefusal) in try l.file(plan, worker: worker, now: now) }
            logger.info("filed a plan", metadata: ["worker_id": "\(worker)", "job_id": "\(plan.jobID)", "crates": "\(plan.crates.count)"])
            return ([:], [])
        case .crate:
            let request = try decode(CrateChunkRequest.self, payload, limit: 64 << 10)
            try ledger.withLock { l throws(FetchRefusal) in try l.permitCrate(request.crate, job: request.jobID, worker: worker, now: now) }
            return try await serveCrate(request, worker: worker, supply: supply)
        case .git:
            let request = try decode(GitFetchRequest.self, payload, limit: 64 << 10)
            return try await serveGit(request, worker: worker)
        case .index:
            let request = try decode(IndexFileRequest.self, payload, limit: 64 << 10)
            return try await serveIndex(request, worker: worker, supply: supply)
        case .dependencies:
            let request = try decode(DependencyEntryRequest.self, payload, limit: 64 << 10)
            return try serveDependencies(request, worker: worker)
        case .storeDependencies:
            return try storeDependencies(headers: headers, payload: payload, worker: worker)
        }
    }

    /// One chunk of `bytes` (of total `size`) from `offset`, charged to the worker.
    func chunk(
        _ read: (Int64, Int) throws(FetchRefusal) -> [UInt8], size: Int64, offset: Int64, job: String, worker: String
    ) throws(FetchRefusal) -> [UInt8] {
        guard offset >= 0, offset < max(size, 1) else { throw FetchRefusal(.badRequest, "offset \(offset) is outside the object (\(size) bytes)") }
        let bytes = try read(offset, configuration.chunkBytes)
        let now = clock()
        try ledger.withLock { l throws(FetchRefusal) in try l.charge(bytes.count, newObject: offset == 0, job: job, worker: worker, now: now) }
        return bytes
    }

    func serveCrate(_ request: CrateChunkRequest, worker: String, supply: CrateSupply) async throws(FetchRefusal) -> ([String: String], [UInt8]) {
        let crate = request.crate
        switch request.part {
        case .indexLine:
            let line = try await supply.indexLine(crate)
            let bytes = Array(line.utf8)
            let served = try chunk({ _, _ in bytes }, size: Int64(bytes.count), offset: 0, job: request.jobID, worker: worker)
            return ([FetchReplyHeader.size: String(bytes.count)], served)
        case .crate:
            var cached = FetchMetrics.CacheResult.hit
            if request.offset == 0 { cached = try await supply.ensure(crate, fresh: request.fresh ?? false) }
            let cache = self.cache
            var size: Int64 = 0
            let bytes = try chunk(
                { (offset, length) throws(FetchRefusal) -> [UInt8] in
                    guard let read = cache.chunk(sha256: crate.sha256, offset: offset, length: length) else {
                        throw FetchRefusal(.notFound, "\(crate.name) \(crate.version) is not in the cache (ask from offset 0)")
                    }
                    size = read.size
                    return read.bytes
                }, size: Int64.max, offset: request.offset, job: request.jobID, worker: worker)
            return ([FetchReplyHeader.size: String(size), FetchReplyHeader.cache: cached.rawValue], bytes)
        }
    }

    func serveGit(_ request: GitFetchRequest, worker: String) async throws(FetchRefusal) -> ([String: String], [UInt8]) {
        let key = "\(worker)|\(request.url)|\(request.ref)"
        var entry = packs.withLock { $0[key] }
        if entry == nil {
            guard request.offset == 0 else { throw FetchRefusal(.badRequest, "no pack is being served for this request (ask from offset 0)") }
            let now = clock()
            try ledger.withLock { l throws(FetchRefusal) in try l.permitGitFetch(job: request.jobID, worker: worker, now: now) }
            let directory = configuration.workDirectory + "/git-" + UUID().uuidString
            var packer = GitPacker(policy: configuration.sourceHosts)
            packer.timeout = configuration.gitTimeout
            packer.maxPackBytes = configuration.maxPackBytes
            let started = ContinuousClock.now
            do {
                let packed = try await packer.pack(url: request.url, ref: request.ref, in: directory)
                metrics.gitPackSeconds.recordNanoseconds((ContinuousClock.now - started).nanoseconds)
                let made = PackEntry(packed: packed, directory: directory, made: clock())
                packs.withLock { $0[key] = made }
                entry = made
                logger.info(
                    "packed a commit", metadata: ["worker_id": "\(worker)", "job_id": "\(request.jobID)", "commit": "\(packed.commit)", "bytes": "\(packed.size)"])
            } catch {
                try? FileManager.default.removeItem(atPath: directory)  // a failed fetch leaves nothing worth keeping
                throw error
            }
        }
        guard let entry else { throw FetchRefusal(.upstream, "no pack") }
        let file = entry.packed.pack
        let bytes = try chunk(
            { (offset, length) throws(FetchRefusal) -> [UInt8] in
                guard let handle = FileHandle(forReadingAtPath: file) else { throw FetchRefusal(.notFound, "the pack is gone (ask from offset 0)") }
                defer { try? handle.close() }  // read-only
                do {
                    try handle.seek(toOffset: UInt64(offset))
                    return [UInt8](try handle.read(upToCount: length) ?? Data())
                } catch {
                    throw FetchRefusal(.upstream, "cannot read the pack: \(error)", retryable: true)
                }
            }, size: entry.packed.size, offset: request.offset, job: request.jobID, worker: worker)
        if request.offset + Int64(bytes.count) >= entry.packed.size {
            // Served to the end: the worker has it all.
            packs.withLock { $0[key] = nil }
            try? FileManager.default.removeItem(atPath: entry.directory)  // housekeeping removes what this misses
        }
        return ([FetchReplyHeader.size: String(entry.packed.size), FetchReplyHeader.commit: entry.packed.commit], bytes)
    }

    func serveIndex(_ request: IndexFileRequest, worker: String, supply: CrateSupply) async throws(FetchRefusal) -> ([String: String], [UInt8]) {
        guard FetchNames.isValidCrateName(request.name) else { throw FetchRefusal(.badRequest, "'\(request.name.prefix(80))' is not a crate name") }
        var bytes = indexFiles.withLock { $0[worker] }.flatMap { $0.name == request.name && request.offset > 0 ? $0.bytes : nil }
        if bytes == nil {
            guard request.offset == 0 else { throw FetchRefusal(.badRequest, "ask for an index file from offset 0") }
            let now = clock()
            try ledger.withLock { l throws(FetchRefusal) in try l.permitIndexFile(job: request.jobID, worker: worker, now: now) }
            guard let file = try await supply.indexFile(request.name) else {
                return ([FetchReplyHeader.size: "-1"], [])  // the registry has no such crate: cargo's 404
            }
            bytes = file
            indexFiles.withLock {
                if $0.count > configuration.quota.maxAccounts { $0.removeAll() }
                $0[worker] = (request.name, file)
            }
        }
        let all = bytes ?? []
        let served = try chunk(
            { offset, length in Array(all[Int(offset)..<min(all.count, Int(offset) + length)]) }, size: Int64(all.count), offset: request.offset,
            job: request.jobID, worker: worker)
        return ([FetchReplyHeader.size: String(all.count)], served)
    }

    /// A chunk of a compiled-dependency entry's seal or archive (`size` -1: no entry for the key).
    func serveDependencies(_ request: DependencyEntryRequest, worker: String) throws(FetchRefusal) -> ([String: String], [UInt8]) {
        guard let store = dependencyCache else { return ([FetchReplyHeader.size: "-1"], []) }
        guard Hex.isLowercase(request.key, bytes: 32) else { throw FetchRefusal(.badRequest, "a dependency key is a hex SHA-256") }
        var size: Int64 = -1
        let bytes = try chunk(
            { (offset, length) throws(FetchRefusal) -> [UInt8] in
                guard let read = store.read(key: request.key, part: request.part.rawValue, offset: offset, length: length) else {
                    if offset == 0 { return [] }
                    throw FetchRefusal(.notFound, "the dependency entry is gone (ask from offset 0)")
                }
                size = read.size
                return read.bytes
            }, size: Int64.max, offset: request.offset, job: request.jobID, worker: worker)
        if size < 0 { metrics.dependencyLookups(hit: false) } else if request.part == .seal { metrics.dependencyLookups(hit: true) }
        return ([FetchReplyHeader.size: String(size)], bytes)
    }

    /// One chunk of a worker's new compiled-dependency entry; the bytes are charged to its job.
    func storeDependencies(headers: [String: String], payload: [UInt8], worker: String) throws(FetchRefusal) -> ([String: String], [UInt8]) {
        guard let store = dependencyCache else { throw FetchRefusal(.notFound, "this fetch service keeps no compiled dependencies") }
        guard let job = headers[DependencyStoreHeader.job], Subjects.isValidToken(job), let key = headers[DependencyStoreHeader.key],
            let part = headers[DependencyStoreHeader.part].flatMap(DependencyEntryPart.init(rawValue:)),
            let offset = Int64(headers[DependencyStoreHeader.offset] ?? ""), offset >= 0
        else { throw FetchRefusal(.badRequest, "a dependency upload names its job, key, part and offset") }
        let now = clock()
        try ledger.withLock { l throws(FetchRefusal) in try l.charge(payload.count, newObject: offset == 0, job: job, worker: worker, now: now) }
        let outcome: DependencyCacheStore.StoreOutcome
        switch part {
        case .seal:
            guard let size = Int64(headers[DependencyStoreHeader.archiveSize] ?? ""), let sha = headers[DependencyStoreHeader.archiveSha256] else {
                throw FetchRefusal(.badRequest, "a dependency seal declares its archive's size and SHA-256")
            }
            outcome = try store.begin(worker: worker, key: key, seal: payload, archiveSize: size, archiveSha256: sha, now: now)
        case .archive:
            outcome = try store.append(worker: worker, key: key, offset: offset, bytes: payload)
        }
        if outcome == .stored {
            metrics.dependencyEntriesStored.increment()
            logger.info("stored a compiled-dependency entry", metadata: ["worker_id": "\(worker)", "job_id": "\(job)", "key": "\(key)"])
        }
        return (outcome == .exists ? [DependencyStoreHeader.exists: "1"] : [:], [])
    }

    /// Drops accounts and packs past their window.
    func expire() {
        let now = clock()
        let window = configuration.quota.window
        ledger.withLock { _ = $0.expire(now: now) }
        let stale = packs.withLock { p -> [PackEntry] in
            let old = p.filter { now - $0.value.made > window }
            for key in old.keys { p[key] = nil }
            return Array(old.values)
        }
        for entry in stale { try? FileManager.default.removeItem(atPath: entry.directory) }  // best effort; logged below if it failed
        if !stale.isEmpty { logger.info("dropped \(stale.count) packs nobody finished fetching") }
        metrics.trackedWorkers.set(Double(ledger.withLock { $0.accounts.count }))
        if let freedDependencies = dependencyCache?.housekeeping(now: now, window: window), freedDependencies > 0 {
            logger.info("evicted \(freedDependencies) bytes from the compiled-dependency cache")
        }
        metrics.dependencyCacheBytes.set(Double(dependencyCache?.totalBytes() ?? 0))
        let freed = cache.evictToLimit()
        if freed > 0 { logger.info("evicted \(freed) bytes from the crate cache") }
        metrics.cacheBytes.set(Double(cache.totalBytes()))
    }
}
